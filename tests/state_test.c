/*  state_test.c — Check suite "state": the immutable versioned state, its
    paths, changes and their wire form. */
#include "am2z_error.h"
#include "am2z_state.h"
#include "am2z_testutil.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define SID "sess-1"

/*  A fresh state at time `now`; fails the test otherwise. */
static am2z_state_t *
s_new(uint64_t now)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_state_new(SID, now, &st), AM2Z_OK);
    ck_assert_ptr_nonnull(st);
    return st;
}

/*  Applies and destroys `changes`; returns the next state or fails. */
static am2z_state_t *
s_apply(const am2z_state_t *in, am2z_changes_t **changes, uint64_t now)
{
    am2z_state_t *next = NULL;
    ck_assert_int_eq(am2z_state_apply(in, *changes, now, 0, &next), AM2Z_OK);
    ck_assert_ptr_nonnull(next);
    am2z_changes_destroy(changes);
    return next;
}

/*  Applies and destroys `changes`; returns the error code (no state made). */
static int
s_apply_rc(const am2z_state_t *in, am2z_changes_t **changes, size_t max_size)
{
    am2z_state_t *next = (am2z_state_t *)1;
    int rc = am2z_state_apply(in, *changes, 5000, max_size, &next);
    if (rc == AM2Z_OK)
        am2z_state_destroy(&next);
    else
        ck_assert_ptr_null(next);
    am2z_changes_destroy(changes);
    return rc;
}

static void
s_sb_init(msgpack_sbuffer *sb, msgpack_packer *pk)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

/*  Top-level keys of the encoded state, in order, as "str" or "#int". */
static size_t
s_top_keys(const am2z_state_t *st, char keys[][32], size_t max)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    ck_assert_int_eq(msgpack_unpack_next(&up, (const char *)am2z_state_data(st),
                                         am2z_state_size(st), NULL),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(up.data.type, MSGPACK_OBJECT_MAP);
    size_t n = up.data.via.map.size;
    ck_assert_uint_le(n, max);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR)
            snprintf(keys[i], 32, "%.*s", (int)k->via.str.size, k->via.str.ptr);
        else
            snprintf(keys[i], 32, "#%llu", (unsigned long long)k->via.u64);
    }
    msgpack_unpacked_destroy(&up);
    return n;
}

/*  Encoded state bytes with the given metadata map and no user keys. */
static void
s_pack_state(msgpack_sbuffer *sb, int64_t version, const char *sid)
{
    msgpack_packer pk;
    s_sb_init(sb, &pk);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "user", 4);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "metadata", 8);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "version", 7);
    msgpack_pack_int64(&pk, version);
    msgpack_pack_str_with_body(&pk, "sessionId", 9);
    msgpack_pack_str_with_body(&pk, sid, strlen(sid));
    msgpack_pack_str_with_body(&pk, "createdAt", 9);
    msgpack_pack_uint64(&pk, 10);
    msgpack_pack_str_with_body(&pk, "lastUpdated", 11);
    msgpack_pack_uint64(&pk, 20);
}

/*  Decodes, and checks that am2z_state_meta_read judges the bytes alike
    and reads the same version and createdAt. */
static int
s_decode_rc(const void *bytes, size_t size)
{
    am2z_state_t *st = NULL;
    int rc = am2z_state_decode(bytes, size, &st);
    uint64_t version = 99, created = 99;
    ck_assert_int_eq(am2z_state_meta_read(bytes, size, &version, &created), rc);
    if (rc == AM2Z_OK) {
        ck_assert_uint_eq(version, am2z_state_version(st));
        ck_assert_uint_eq(created, am2z_state_created_at(st));
        am2z_state_destroy(&st);
    } else {
        ck_assert_ptr_null(st);
        ck_assert_uint_eq(version, 0);
        ck_assert_uint_eq(created, 0);
    }
    return rc;
}

static int
s_changes_decode_rc(const void *bytes, size_t size)
{
    am2z_changes_t *ch = NULL;
    int rc = am2z_changes_decode(bytes, size, &ch);
    if (rc == AM2Z_OK)
        am2z_changes_destroy(&ch);
    else
        ck_assert_ptr_null(ch);
    return rc;
}

/*  `depth` nested one-element arrays around 1: [[...[1]...]]. */
static uint8_t *
s_nested(size_t depth, size_t *size)
{
    uint8_t *b = malloc(depth + 1);
    memset(b, 0x91, depth);
    b[depth] = 0x01;
    *size = depth + 1;
    return b;
}

/*  am2z_state_peek reads metadata.version wherever the key sits, and
    refuses what a decode would refuse for its structure, allocating
    nothing. */
START_TEST(test_state_peek_reads_version_and_bounds_depth)
{
    msgpack_sbuffer sb;
    uint64_t v = 99;
    s_pack_state(&sb, 7, "peek-1");                 /* "metadata" second */
    ck_assert_int_eq(am2z_state_peek((const uint8_t *)sb.data, sb.size, &v), AM2Z_OK);
    ck_assert_uint_eq(v, 7);
    msgpack_sbuffer_destroy(&sb);

    am2z_state_t *st = s_new(5);                    /* our own encoding: metadata first */
    ck_assert_int_eq(am2z_state_peek(am2z_state_data(st), am2z_state_size(st), &v), AM2Z_OK);
    ck_assert_uint_eq(v, 1);
    am2z_state_destroy(&st);

    /* no metadata, or a metadata without an unsigned version: 0 */
    const uint8_t plain[] = { 0x81, 0xa1, 'k', 0x01 };
    ck_assert_int_eq(am2z_state_peek(plain, sizeof plain, &v), AM2Z_OK);
    ck_assert_uint_eq(v, 0);
    const uint8_t neg[] = { 0x81, 0xa8, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a',
                            0x81, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0xff };
    ck_assert_int_eq(am2z_state_peek(neg, sizeof neg, &v), AM2Z_OK);
    ck_assert_uint_eq(v, 0);
    const uint8_t huge[] = { 0x81, 0xa8, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a',
                             0x81, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n',
                             0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe };
    ck_assert_int_eq(am2z_state_peek(huge, sizeof huge, &v), AM2Z_OK);
    ck_assert_uint_eq(v, UINT64_MAX - 1);

    /* 32 nested maps pass, 33 do not; not a map, truncated: refused */
    uint8_t deep[33 * 3 + 1];
    am2z_test_nested_maps(deep, 33);
    ck_assert_int_eq(am2z_state_peek(deep + 3, sizeof deep - 3, &v), AM2Z_OK);
    ck_assert_int_eq(am2z_state_peek(deep, sizeof deep, &v), AM2Z_EPROTO);
    ck_assert_int_eq(s_decode_rc(deep, sizeof deep), AM2Z_EPROTO);   /* as a decode would */
    const uint8_t arr[] = { 0x91, 0x01 };
    ck_assert_int_eq(am2z_state_peek(arr, sizeof arr, &v), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_peek(plain, sizeof plain - 1, &v), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_peek(NULL, 0, &v), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_peek(plain, sizeof plain, NULL), AM2Z_EINVAL);
}
END_TEST

START_TEST(test_state_new_has_version_one_and_metadata)
{
    am2z_state_t *st = s_new(1234);
    ck_assert_uint_eq(am2z_state_version(st), 1);
    ck_assert_str_eq(am2z_state_session_id(st), SID);
    ck_assert_uint_eq(am2z_state_created_at(st), 1234);
    ck_assert_uint_eq(am2z_state_last_updated(st), 1234);

    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(st, "metadata.version", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(am2z_state_get_int(st, "metadata.createdAt", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1234);
    char sid[64];
    ck_assert_int_eq(am2z_state_get_strcpy(st, "metadata.sessionId", sid, sizeof sid),
                     AM2Z_OK);
    ck_assert_str_eq(sid, SID);
    size_t n;
    ck_assert_int_eq(am2z_state_get_count(st, "metadata", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 4);

    char keys[4][32];
    ck_assert_uint_eq(s_top_keys(st, keys, 4), 1);
    ck_assert_str_eq(keys[0], "metadata");

    am2z_state_t *bad = NULL;
    ck_assert_int_eq(am2z_state_new(NULL, 1, &bad), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_new("", 1, &bad), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_new("a b", 1, &bad), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_new("a/b", 1, &bad), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_new(SID, 1, NULL), AM2Z_EINVAL);
    ck_assert_ptr_null(bad);

    am2z_state_destroy(&st);
    ck_assert_ptr_null(st);
    am2z_state_destroy(&st);
    am2z_state_destroy(NULL);
}
END_TEST

START_TEST(test_state_round_trip_encode_decode)
{
    am2z_state_t *st = s_new(1000);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_str(ch, "name", "widget"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "count", -42), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_float(ch, "ratio", 0.25), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_bool(ch, "flags.on", true), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_nil(ch, "flags.none"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_append_int(ch, "list", 7), AM2Z_OK);
    am2z_state_t *next = s_apply(st, &ch, 2000);

    am2z_state_t *back = NULL;
    ck_assert_int_eq(am2z_state_decode(am2z_state_data(next), am2z_state_size(next),
                                       &back), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_size(back), am2z_state_size(next));
    ck_assert_mem_eq(am2z_state_data(back), am2z_state_data(next),
                     am2z_state_size(next));
    ck_assert_uint_eq(am2z_state_version(back), 2);
    ck_assert_str_eq(am2z_state_session_id(back), SID);
    ck_assert_uint_eq(am2z_state_created_at(back), 1000);
    ck_assert_uint_eq(am2z_state_last_updated(back), 2000);

    const char *s;
    size_t len;
    ck_assert_int_eq(am2z_state_get_str(back, "name", &s, &len), AM2Z_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert_mem_eq(s, "widget", 6);
    int64_t i;
    ck_assert_int_eq(am2z_state_get_int(back, "count", &i), AM2Z_OK);
    ck_assert_int_eq(i, -42);
    double d;
    ck_assert_int_eq(am2z_state_get_float(back, "ratio", &d), AM2Z_OK);
    ck_assert_double_eq(d, 0.25);
    bool b;
    ck_assert_int_eq(am2z_state_get_bool(back, "flags.on", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_nil(back, "flags.none"), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_int(back, "list.0", &i), AM2Z_OK);
    ck_assert_int_eq(i, 7);

    am2z_state_t *copy = am2z_state_dup(back);
    ck_assert_ptr_nonnull(copy);
    ck_assert_ptr_ne(am2z_state_data(copy), am2z_state_data(back));
    ck_assert_mem_eq(am2z_state_data(copy), am2z_state_data(back),
                     am2z_state_size(back));
    ck_assert_ptr_null(am2z_state_dup(NULL));

    /*  Decode keeps the bytes as given, even with metadata not first. */
    msgpack_sbuffer sb;
    s_pack_state(&sb, 3, "other");
    am2z_state_t *foreign = NULL;
    ck_assert_int_eq(am2z_state_decode((uint8_t *)sb.data, sb.size, &foreign), AM2Z_OK);
    ck_assert_mem_eq(am2z_state_data(foreign), sb.data, sb.size);
    ck_assert_uint_eq(am2z_state_version(foreign), 3);
    ck_assert_str_eq(am2z_state_session_id(foreign), "other");
    msgpack_sbuffer_destroy(&sb);

    am2z_state_destroy(&foreign);
    am2z_state_destroy(&copy);
    am2z_state_destroy(&back);
    am2z_state_destroy(&next);
    am2z_state_destroy(&st);
}
END_TEST

START_TEST(test_state_apply_bumps_version_and_last_updated)
{
    am2z_state_t *s1 = s_new(1000);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_int(ch, "x", 1), AM2Z_OK);
    am2z_state_t *s2 = s_apply(s1, &ch, 2000);
    ck_assert_uint_eq(am2z_state_version(s2), 2);
    ck_assert_uint_eq(am2z_state_created_at(s2), 1000);
    ck_assert_uint_eq(am2z_state_last_updated(s2), 2000);
    ck_assert_str_eq(am2z_state_session_id(s2), SID);

    /*  An empty step still counts as a step. */
    ch = am2z_changes_new();
    am2z_state_t *s3 = s_apply(s2, &ch, 3000);
    ck_assert_uint_eq(am2z_state_version(s3), 3);
    ck_assert_uint_eq(am2z_state_last_updated(s3), 3000);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(s3, "metadata.version", &v), AM2Z_OK);
    ck_assert_int_eq(v, 3);
    ck_assert_int_eq(am2z_state_get_int(s3, "metadata.lastUpdated", &v), AM2Z_OK);
    ck_assert_int_eq(v, 3000);

    am2z_state_t *s4 = NULL;
    ck_assert_int_eq(am2z_state_apply(s3, NULL, 4000, 0, &s4), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(s4), 4);
    am2z_state_destroy(&s4);
    ck_assert_int_eq(am2z_state_apply(NULL, NULL, 4000, 0, &s4), AM2Z_EINVAL);
    ck_assert_ptr_null(s4);

    am2z_state_destroy(&s3);
    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_apply_never_mutates_input)
{
    am2z_state_t *s1 = s_new(1000);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "a.b", 1);
    am2z_changes_set_str(ch, "keep", "yes");
    am2z_changes_append_int(ch, "list", 1);
    am2z_state_t *s2 = s_apply(s1, &ch, 2000);

    size_t size = am2z_state_size(s2);
    uint8_t *before = malloc(size);
    memcpy(before, am2z_state_data(s2), size);

    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "a.b", 2);
    am2z_changes_set_int(ch, "a.c", 3);
    am2z_changes_delete(ch, "keep");
    am2z_changes_append_int(ch, "list", 2);
    am2z_state_t *s3 = s_apply(s2, &ch, 3000);

    ck_assert_uint_eq(am2z_state_size(s2), size);
    ck_assert_mem_eq(am2z_state_data(s2), before, size);
    ck_assert_uint_eq(am2z_state_version(s2), 2);
    ck_assert_uint_eq(am2z_state_last_updated(s2), 2000);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(s2, "a.b", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);
    ck_assert(am2z_state_has(s2, "keep"));
    ck_assert(!am2z_state_has(s2, "a.c"));
    size_t n;
    ck_assert_int_eq(am2z_state_get_count(s2, "list", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 1);

    ck_assert_int_eq(am2z_state_get_int(s3, "a.b", &v), AM2Z_OK);
    ck_assert_int_eq(v, 2);
    ck_assert(!am2z_state_has(s3, "keep"));
    ck_assert_int_eq(am2z_state_get_count(s3, "list", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 2);

    /*  A failed apply leaves the input alone too. */
    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "z", 1);
    am2z_changes_set_int(ch, "a.b.c", 1);
    ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_ETYPE);
    ck_assert_mem_eq(am2z_state_data(s2), before, size);

    free(before);
    am2z_state_destroy(&s3);
    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_nested_path_set_creates_maps)
{
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_int(ch, "a.b.c", 1), AM2Z_OK);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);
    am2z_vtype_t t;
    ck_assert_int_eq(am2z_state_type(s2, "a", &t), AM2Z_OK);
    ck_assert_int_eq(t, AM2Z_VT_MAP);
    ck_assert_int_eq(am2z_state_type(s2, "a.b", &t), AM2Z_OK);
    ck_assert_int_eq(t, AM2Z_VT_MAP);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(s2, "a.b.c", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);

    /*  The second step opens maps that arrived encoded in the input. */
    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_str(ch, "a.b.d", "x"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "a.e.f.g", 9), AM2Z_OK);
    am2z_state_t *s3 = s_apply(s2, &ch, 3);
    size_t n;
    ck_assert_int_eq(am2z_state_get_count(s3, "a.b", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(am2z_state_get_int(s3, "a.b.c", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(am2z_state_get_int(s3, "a.e.f.g", &v), AM2Z_OK);
    ck_assert_int_eq(v, 9);

    /*  Set on an existing key keeps its place; new keys go last. */
    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "z", 1);
    am2z_changes_set_int(ch, "y", 2);
    am2z_state_t *s4 = s_apply(s3, &ch, 4);
    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "a", 0);
    am2z_changes_set_int(ch, "x", 3);
    am2z_changes_delete(ch, "z");
    am2z_state_t *s5 = s_apply(s4, &ch, 5);
    char keys[8][32];
    ck_assert_uint_eq(s_top_keys(s5, keys, 8), 4);
    ck_assert_str_eq(keys[0], "metadata");
    ck_assert_str_eq(keys[1], "a");
    ck_assert_str_eq(keys[2], "y");
    ck_assert_str_eq(keys[3], "x");

    am2z_state_destroy(&s5);
    am2z_state_destroy(&s4);
    am2z_state_destroy(&s3);
    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_set_through_scalar_is_type_error)
{
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "n", 1);
    am2z_changes_set_str(ch, "s", "text");
    am2z_changes_append_int(ch, "arr", 1);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);

    const char *through[] = { "n.x", "s.x", "arr.x", "arr.0", "n.x.y" };
    for (size_t i = 0; i < sizeof through / sizeof through[0]; i++) {
        ch = am2z_changes_new();
        ck_assert_int_eq(am2z_changes_set_int(ch, through[i], 1), AM2Z_OK);
        ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_ETYPE);
    }
    /*  Delete through an existing scalar is the same mistake. */
    ch = am2z_changes_new();
    am2z_changes_delete(ch, "n.x");
    ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_ETYPE);
    /*  Append to a non-array, or through a scalar. */
    ch = am2z_changes_new();
    am2z_changes_append_int(ch, "n", 2);
    ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_ETYPE);
    ch = am2z_changes_new();
    am2z_changes_append_int(ch, "s.list", 2);
    ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_ETYPE);
    /*  Within one step: a value set earlier blocks a later path. */
    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "fresh", 1);
    am2z_changes_set_int(ch, "fresh.x", 1);
    ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_ETYPE);
    /*  Replacing the scalar itself is fine. */
    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "n", 5);
    am2z_changes_set_int(ch, "s", 6);
    ck_assert_int_eq(s_apply_rc(s2, &ch, 0), AM2Z_OK);

    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_delete_missing_path_is_ok)
{
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "a.b", 1);
    am2z_changes_set_int(ch, "a.c", 2);
    am2z_changes_set_int(ch, "d", 3);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);

    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_delete(ch, "nope"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_delete(ch, "nope.deeper.still"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_delete(ch, "a.nope"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_delete(ch, "a.b"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_delete(ch, "a.b"), AM2Z_OK);
    am2z_state_t *s3 = s_apply(s2, &ch, 3);
    ck_assert_uint_eq(am2z_state_version(s3), 3);
    ck_assert(!am2z_state_has(s3, "a.b"));
    ck_assert(!am2z_state_has(s3, "nope"));
    ck_assert(am2z_state_has(s3, "a.c"));
    ck_assert(am2z_state_has(s3, "d"));
    size_t n;
    ck_assert_int_eq(am2z_state_get_count(s3, "a", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 1);

    am2z_state_destroy(&s3);
    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_append_creates_and_extends_array)
{
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_append_int(ch, "list", 1), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_append_str(ch, "list", "two"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_append_int(ch, "deep.er.items", 5), AM2Z_OK);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);
    size_t n;
    ck_assert_int_eq(am2z_state_get_count(s2, "list", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(am2z_state_get_count(s2, "deep.er.items", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 1);

    /*  Extending an array that arrived encoded keeps its elements. */
    const uint8_t map[] = { 0x81, 0xa1, 'k', 0xc3 };            /* {"k": true} */
    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_append_raw(ch, "list", map, sizeof map), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_append_int(ch, "list", -3), AM2Z_OK);
    am2z_state_t *s3 = s_apply(s2, &ch, 3);
    ck_assert_int_eq(am2z_state_get_count(s3, "list", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 4);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(s3, "list.0", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);
    char buf[8];
    ck_assert_int_eq(am2z_state_get_strcpy(s3, "list.1", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "two");
    bool b = false;
    ck_assert_int_eq(am2z_state_get_bool(s3, "list.2.k", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_int(s3, "list.3", &v), AM2Z_OK);
    ck_assert_int_eq(v, -3);

    /*  Appending to an empty array that came from set_raw. */
    const uint8_t empty[] = { 0x90 };
    ch = am2z_changes_new();
    am2z_changes_set_raw(ch, "e", empty, sizeof empty);
    am2z_changes_append_int(ch, "e", 1);
    am2z_state_t *s4 = s_apply(s3, &ch, 4);
    ck_assert_int_eq(am2z_state_get_count(s4, "e", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 1);

    am2z_state_destroy(&s4);
    am2z_state_destroy(&s3);
    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

/*  Sets `bytes` at `path`, reads them back via get_raw and compares. */
static void
s_check_raw(const am2z_state_t *st, const char *path, const uint8_t *bytes,
            size_t size)
{
    uint8_t *raw = NULL;
    size_t raw_size = 0;
    ck_assert_int_eq(am2z_state_get_raw(st, path, &raw, &raw_size), AM2Z_OK);
    ck_assert_uint_eq(raw_size, size);
    ck_assert_mem_eq(raw, bytes, size);
    free(raw);
}

START_TEST(test_state_raw_values_round_trip)
{
    msgpack_sbuffer bin, ext8, fixext, nested, f32;
    msgpack_packer pk;
    s_sb_init(&bin, &pk);
    msgpack_pack_bin_with_body(&pk, "\x00\x01\xff\x7f", 4);
    s_sb_init(&ext8, &pk);
    msgpack_pack_ext_with_body(&pk, "abcdefghijk", 11, 42);
    s_sb_init(&fixext, &pk);
    msgpack_pack_ext_with_body(&pk, "abcd", 4, -1);
    s_sb_init(&f32, &pk);
    msgpack_pack_float(&pk, 1.5f);
    s_sb_init(&nested, &pk);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_bin_with_body(&pk, "zz", 2);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "y", 1);
    msgpack_pack_nil(&pk);
    msgpack_pack_int(&pk, 7);                   /* a non-string key */
    msgpack_pack_str_with_body(&pk, "seven", 5);

    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_raw(ch, "bin", (uint8_t *)bin.data, bin.size), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "ext", (uint8_t *)ext8.data, ext8.size), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "fx", (uint8_t *)fixext.data, fixext.size), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "f32", (uint8_t *)f32.data, f32.size), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "n.m", (uint8_t *)nested.data, nested.size), AM2Z_OK);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);

    am2z_vtype_t t;
    ck_assert_int_eq(am2z_state_type(s2, "bin", &t), AM2Z_OK);
    ck_assert_int_eq(t, AM2Z_VT_BIN);
    ck_assert_int_eq(am2z_state_type(s2, "ext", &t), AM2Z_OK);
    ck_assert_int_eq(t, AM2Z_VT_EXT);
    ck_assert_int_eq(am2z_state_type(s2, "f32", &t), AM2Z_OK);
    ck_assert_int_eq(t, AM2Z_VT_FLOAT);
    ck_assert_int_eq(am2z_state_type(s2, "n.m", &t), AM2Z_OK);
    ck_assert_int_eq(t, AM2Z_VT_MAP);

    /*  A later step that opens "n.m" must keep its bytes, non-string key
        included; untouched values pass through verbatim. */
    ch = am2z_changes_new();
    am2z_changes_set_int(ch, "n.other", 1);
    am2z_changes_set_int(ch, "n.m.added", 1);
    am2z_changes_delete(ch, "n.m.added");
    am2z_state_t *s3 = s_apply(s2, &ch, 3);

    const am2z_state_t *states[] = { s2, s3 };
    for (size_t i = 0; i < 2; i++) {
        s_check_raw(states[i], "bin", (uint8_t *)bin.data, bin.size);
        s_check_raw(states[i], "ext", (uint8_t *)ext8.data, ext8.size);
        s_check_raw(states[i], "fx", (uint8_t *)fixext.data, fixext.size);
        s_check_raw(states[i], "f32", (uint8_t *)f32.data, f32.size);
        s_check_raw(states[i], "n.m", (uint8_t *)nested.data, nested.size);
    }
    double d;
    ck_assert_int_eq(am2z_state_get_float(s3, "f32", &d), AM2Z_OK);
    ck_assert_double_eq(d, 1.5);
    ck_assert_int_eq(am2z_state_get_nil(s3, "n.m.x.2.y"), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_str(s3, "bin", &(const char *){ NULL },
                                        &(size_t){ 0 }), AM2Z_ETYPE);

    /*  get_raw with an empty path is the whole state. */
    uint8_t *all = NULL;
    size_t all_size = 0;
    ck_assert_int_eq(am2z_state_get_raw(s3, "", &all, &all_size), AM2Z_OK);
    ck_assert_uint_eq(all_size, am2z_state_size(s3));
    ck_assert_mem_eq(all, am2z_state_data(s3), all_size);
    free(all);

    /*  Bad raw values are refused when recorded. */
    ch = am2z_changes_new();
    const uint8_t two[] = { 0x01, 0x02 };
    const uint8_t cut[] = { 0x92, 0x01 };
    ck_assert_int_eq(am2z_changes_set_raw(ch, "x", two, sizeof two), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "x", cut, sizeof cut), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "x", NULL, 0), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_changes_append_raw(ch, "x", cut, sizeof cut), AM2Z_EPROTO);
    ck_assert_uint_eq(am2z_changes_count(ch), 0);
    am2z_changes_destroy(&ch);

    msgpack_sbuffer_destroy(&bin);
    msgpack_sbuffer_destroy(&ext8);
    msgpack_sbuffer_destroy(&fixext);
    msgpack_sbuffer_destroy(&f32);
    msgpack_sbuffer_destroy(&nested);
    am2z_state_destroy(&s3);
    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_metadata_is_reserved)
{
    am2z_changes_t *ch = am2z_changes_new();
    const uint8_t one[] = { 0x01 };
    ck_assert_int_eq(am2z_changes_set_int(ch, "metadata", 1), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_set_int(ch, "metadata.version", 99), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_set_str(ch, "metadata.sessionId", "x"), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "metadata.x", one, 1), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_delete(ch, "metadata"), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_append_int(ch, "metadata.list", 1), AM2Z_EINVAL);
    ck_assert_uint_eq(am2z_changes_count(ch), 0);
    /*  Only the top-level key is reserved. */
    ck_assert_int_eq(am2z_changes_set_int(ch, "metadatax", 1), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "meta", 1), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "a.metadata", 1), AM2Z_OK);
    ck_assert_uint_eq(am2z_changes_count(ch), 3);

    am2z_state_t *s1 = s_new(1);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(s2, "a.metadata", &v), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_int(s2, "metadata.version", &v), AM2Z_OK);
    ck_assert_int_eq(v, 2);

    /*  The wire form cannot smuggle it in either. */
    const uint8_t wire[] = { 0x91, 0x93, 0xa3, 's', 'e', 't',
                             0xb0, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', '.',
                             'v', 'e', 'r', 's', 'i', 'o', 'n', 0x05 };
    ck_assert_int_eq(s_changes_decode_rc(wire, sizeof wire), AM2Z_EINVAL);

    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_array_index_read)
{
    const uint8_t arr[] = { 0x94, 0x0a, 0xa1, 'x', 0x81, 0xa1, 'k', 0xc3,
                            0x91, 0x05 };           /* [10, "x", {"k": true}, [5]] */
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_raw(ch, "arr", arr, sizeof arr), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "m.0", 77), AM2Z_OK);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);

    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(s2, "arr.0", &v), AM2Z_OK);
    ck_assert_int_eq(v, 10);
    const char *s;
    size_t len;
    ck_assert_int_eq(am2z_state_get_str(s2, "arr.1", &s, &len), AM2Z_OK);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(s[0], 'x');
    bool b;
    ck_assert_int_eq(am2z_state_get_bool(s2, "arr.2.k", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_int(s2, "arr.3.0", &v), AM2Z_OK);
    ck_assert_int_eq(v, 5);
    /*  A numeric segment on a map is a key. */
    ck_assert_int_eq(am2z_state_get_int(s2, "m.0", &v), AM2Z_OK);
    ck_assert_int_eq(v, 77);

    const char *missing[] = { "arr.4", "arr.01", "arr.-1", "arr.x", "arr.+1",
                              "arr.99999999999", "arr.0.x", "arr.3.1", "m.1" };
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        ck_assert_int_eq(am2z_state_get_int(s2, missing[i], &v), AM2Z_ENOTFOUND);
        ck_assert(!am2z_state_has(s2, missing[i]));
    }

    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_typed_getters_report_type_errors)
{
    const uint8_t big[] = { 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_str(ch, "s", "hello");
    am2z_changes_set_int(ch, "i", INT64_MIN);
    am2z_changes_set_int(ch, "p", INT64_MAX);
    am2z_changes_set_float(ch, "f", -2.5);
    am2z_changes_set_bool(ch, "b", false);
    am2z_changes_set_nil(ch, "z");
    am2z_changes_set_raw(ch, "u", big, sizeof big);
    am2z_changes_set_strn(ch, "n", "a\0b", 3);
    am2z_state_t *st = s_apply(s1, &ch, 2);

    const char *s;
    size_t len;
    int64_t i;
    double d;
    bool b;
    size_t n;
    char buf[6];
    am2z_vtype_t t;

    ck_assert_int_eq(am2z_state_get_int(st, "i", &i), AM2Z_OK);
    ck_assert(i == INT64_MIN);
    ck_assert_int_eq(am2z_state_get_int(st, "p", &i), AM2Z_OK);
    ck_assert(i == INT64_MAX);
    ck_assert_int_eq(am2z_state_get_int(st, "u", &i), AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_state_get_float(st, "u", &d), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_float(st, "i", &d), AM2Z_OK);
    ck_assert_double_eq(d, (double)INT64_MIN);
    ck_assert_int_eq(am2z_state_get_float(st, "f", &d), AM2Z_OK);
    ck_assert_double_eq(d, -2.5);
    ck_assert_int_eq(am2z_state_get_str(st, "n", &s, &len), AM2Z_OK);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(s, "a\0b", 3);

    ck_assert_int_eq(am2z_state_get_int(st, "s", &i), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_int(st, "f", &i), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_str(st, "i", &s, &len), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_float(st, "s", &d), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_bool(st, "z", &b), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_nil(st, "b"), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_count(st, "i", &n), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_strcpy(st, "b", buf, sizeof buf), AM2Z_ETYPE);

    ck_assert_int_eq(am2z_state_get_bool(st, "b", &b), AM2Z_OK);
    ck_assert(!b);
    ck_assert_int_eq(am2z_state_get_nil(st, "z"), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_strcpy(st, "s", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "hello");
    ck_assert_int_eq(am2z_state_get_strcpy(st, "s", buf, 5), AM2Z_ERESOURCE);

    ck_assert_int_eq(am2z_state_get_int(st, "missing", &i), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_get_nil(st, "missing"), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_type(st, "missing", &t), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_get_int(st, "s.deeper", &i), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_get_int(st, "i", NULL), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_get_int(NULL, "i", &i), AM2Z_EINVAL);

    const struct { const char *path; am2z_vtype_t type; } types[] = {
        { "s", AM2Z_VT_STR }, { "i", AM2Z_VT_INT }, { "u", AM2Z_VT_INT },
        { "f", AM2Z_VT_FLOAT }, { "b", AM2Z_VT_BOOL }, { "z", AM2Z_VT_NIL },
        { "metadata", AM2Z_VT_MAP },
    };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ck_assert_int_eq(am2z_state_type(st, types[k].path, &t), AM2Z_OK);
        ck_assert_int_eq(t, types[k].type);
    }

    am2z_state_destroy(&st);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_max_size_is_resource_error)
{
    am2z_state_t *s1 = s_new(1);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';

    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_str(ch, "big", big);
    am2z_state_t *full = s_apply(s1, &ch, 5000);     /* same time as s_apply_rc */
    size_t need = am2z_state_size(full);
    am2z_state_destroy(&full);

    ch = am2z_changes_new();
    am2z_changes_set_str(ch, "big", big);
    ck_assert_int_eq(s_apply_rc(s1, &ch, need - 1), AM2Z_ERESOURCE);
    ch = am2z_changes_new();
    am2z_changes_set_str(ch, "big", big);
    ck_assert_int_eq(s_apply_rc(s1, &ch, need), AM2Z_OK);
    ch = am2z_changes_new();
    am2z_changes_set_str(ch, "big", big);
    ck_assert_int_eq(s_apply_rc(s1, &ch, 0), AM2Z_OK);

    /*  Nesting is a limit too: the top map is one level. */
    size_t size;
    uint8_t *deep = s_nested(AM2Z_STATE_DEPTH_MAX - 1, &size);
    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_raw(ch, "a", deep, size), AM2Z_OK);
    ck_assert_int_eq(s_apply_rc(s1, &ch, 0), AM2Z_OK);
    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_raw(ch, "a.b", deep, size), AM2Z_OK);
    ck_assert_int_eq(s_apply_rc(s1, &ch, 0), AM2Z_ERESOURCE);
    free(deep);
    deep = s_nested(AM2Z_STATE_DEPTH_MAX + 1, &size);
    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_raw(ch, "a", deep, size), AM2Z_EPROTO);
    am2z_changes_destroy(&ch);
    free(deep);

    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_state_from_map_replaces_metadata)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    s_sb_init(&sb, &pk);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "metadata", 8);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "version", 7);
    msgpack_pack_int(&pk, 99);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, "seven", 5);

    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_state_from_map(SID, (uint8_t *)sb.data, sb.size, 500, &st),
                     AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(st), 1);
    ck_assert_str_eq(am2z_state_session_id(st), SID);
    ck_assert_uint_eq(am2z_state_created_at(st), 500);
    ck_assert_uint_eq(am2z_state_last_updated(st), 500);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(st, "x", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);
    size_t n;
    ck_assert_int_eq(am2z_state_get_count(st, "metadata", &n), AM2Z_OK);
    ck_assert_uint_eq(n, 4);
    char keys[4][32];
    ck_assert_uint_eq(s_top_keys(st, keys, 4), 3);
    ck_assert_str_eq(keys[0], "metadata");
    ck_assert_str_eq(keys[1], "x");
    ck_assert_str_eq(keys[2], "#7");
    am2z_state_destroy(&st);

    /*  Non-string keys survive an apply too. */
    ck_assert_int_eq(am2z_state_from_map(SID, (uint8_t *)sb.data, sb.size, 500, &st),
                     AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "x", 2);
    am2z_state_t *next = s_apply(st, &ch, 600);
    ck_assert_uint_eq(s_top_keys(next, keys, 4), 3);
    ck_assert_str_eq(keys[2], "#7");
    am2z_state_destroy(&next);
    am2z_state_destroy(&st);
    msgpack_sbuffer_destroy(&sb);

    ck_assert_int_eq(am2z_state_from_map(SID, NULL, 0, 1, &st), AM2Z_OK);
    ck_assert_uint_eq(s_top_keys(st, keys, 4), 1);
    am2z_state_destroy(&st);

    const uint8_t array[] = { 0x91, 0x01 };
    const uint8_t cut[] = { 0x81, 0xa1, 'x' };
    const uint8_t two[] = { 0x80, 0x80 };
    const uint8_t map[] = { 0x80 };
    ck_assert_int_eq(am2z_state_from_map(SID, array, sizeof array, 1, &st), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_from_map(SID, cut, sizeof cut, 1, &st), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_from_map(SID, two, sizeof two, 1, &st), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_from_map("bad id", map, sizeof map, 1, &st), AM2Z_EINVAL);
    ck_assert_ptr_null(st);
}
END_TEST

START_TEST(test_state_with_metadata)
{
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_str(ch, "a", "x");
    am2z_changes_set_int(ch, "b.c", 2);
    am2z_state_t *s2 = s_apply(s1, &ch, 2);

    am2z_state_t *r = NULL;
    ck_assert_int_eq(am2z_state_with_metadata(s2, "other:sess", 17, 100, 200, &r),
                     AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(r), 17);
    ck_assert_str_eq(am2z_state_session_id(r), "other:sess");
    ck_assert_uint_eq(am2z_state_created_at(r), 100);
    ck_assert_uint_eq(am2z_state_last_updated(r), 200);

    uint8_t *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    ck_assert_int_eq(am2z_state_get_raw(s2, "b", &a, &an), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_raw(r, "b", &b, &bn), AM2Z_OK);
    ck_assert_uint_eq(an, bn);
    ck_assert_mem_eq(a, b, an);
    free(a);
    free(b);
    char keys[4][32];
    ck_assert_uint_eq(s_top_keys(r, keys, 4), 3);
    ck_assert_str_eq(keys[1], "a");
    ck_assert_str_eq(keys[2], "b");
    /*  The input is untouched. */
    ck_assert_uint_eq(am2z_state_version(s2), 2);
    ck_assert_str_eq(am2z_state_session_id(s2), SID);
    am2z_state_destroy(&r);

    ck_assert_int_eq(am2z_state_with_metadata(s2, "bad id", 1, 1, 1, &r), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_with_metadata(s2, NULL, 1, 1, 1, &r), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_with_metadata(s2, SID, 0, 1, 1, &r), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_with_metadata(NULL, SID, 1, 1, 1, &r), AM2Z_EINVAL);
    ck_assert_ptr_null(r);

    am2z_state_destroy(&s2);
    am2z_state_destroy(&s1);
}
END_TEST

START_TEST(test_changes_encode_decode_round_trip)
{
    const uint8_t bin[] = { 0xc4, 0x02, 0xde, 0xad };
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(am2z_changes_set_str(ch, "a.name", "n"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "a.count", 3), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_raw(ch, "blob", bin, sizeof bin), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_delete(ch, "old"), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_append_int(ch, "log", 1), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_nil(ch, "gone"), AM2Z_OK);
    ck_assert_uint_eq(am2z_changes_count(ch), 6);

    uint8_t *wire = NULL;
    size_t wire_size = 0;
    ck_assert_int_eq(am2z_changes_encode(ch, &wire, &wire_size), AM2Z_OK);
    am2z_changes_t *back = NULL;
    ck_assert_int_eq(am2z_changes_decode(wire, wire_size, &back), AM2Z_OK);
    ck_assert_uint_eq(am2z_changes_count(back), 6);
    uint8_t *again = NULL;
    size_t again_size = 0;
    ck_assert_int_eq(am2z_changes_encode(back, &again, &again_size), AM2Z_OK);
    ck_assert_uint_eq(again_size, wire_size);
    ck_assert_mem_eq(again, wire, wire_size);

    /*  Both apply to the same result. */
    am2z_state_t *s1 = s_new(1);
    am2z_state_t *x = NULL, *y = NULL;
    ck_assert_int_eq(am2z_state_apply(s1, ch, 2, 0, &x), AM2Z_OK);
    ck_assert_int_eq(am2z_state_apply(s1, back, 2, 0, &y), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_size(x), am2z_state_size(y));
    ck_assert_mem_eq(am2z_state_data(x), am2z_state_data(y), am2z_state_size(x));
    s_check_raw(y, "blob", bin, sizeof bin);

    /*  The documented wire form, byte for byte. */
    am2z_changes_t *small = am2z_changes_new();
    am2z_changes_delete(small, "a");
    am2z_changes_set_int(small, "b", 5);
    uint8_t *sw = NULL;
    size_t sw_size = 0;
    ck_assert_int_eq(am2z_changes_encode(small, &sw, &sw_size), AM2Z_OK);
    const uint8_t expect[] = { 0x92, 0x92, 0xa3, 'd', 'e', 'l', 0xa1, 'a',
                               0x93, 0xa3, 's', 'e', 't', 0xa1, 'b', 0x05 };
    ck_assert_uint_eq(sw_size, sizeof expect);
    ck_assert_mem_eq(sw, expect, sizeof expect);

    /*  No changes encode as an empty list. */
    am2z_changes_t *none = am2z_changes_new();
    uint8_t *nw = NULL;
    size_t nw_size = 0;
    ck_assert_int_eq(am2z_changes_encode(none, &nw, &nw_size), AM2Z_OK);
    ck_assert_uint_eq(nw_size, 1);
    ck_assert_uint_eq(nw[0], 0x90);
    ck_assert_int_eq(s_changes_decode_rc(nw, nw_size), AM2Z_OK);

    free(nw);
    free(sw);
    free(again);
    free(wire);
    am2z_changes_destroy(&none);
    am2z_changes_destroy(&small);
    am2z_state_destroy(&y);
    am2z_state_destroy(&x);
    am2z_state_destroy(&s1);
    am2z_changes_destroy(&back);
    am2z_changes_destroy(&ch);
    ck_assert_ptr_null(ch);
    am2z_changes_destroy(&ch);
    am2z_changes_destroy(NULL);
    ck_assert_uint_eq(am2z_changes_count(NULL), 0);
}
END_TEST

#define BYTES(...) ((const uint8_t[]) { __VA_ARGS__ }), sizeof((const uint8_t[]) { __VA_ARGS__ })

START_TEST(test_changes_decode_rejects_garbage)
{
    /*  Random bytes: any answer but a crash (ASan/UBSan watch the rest). */
    uint64_t seed = 7;
    uint8_t buf[48];
    for (int i = 0; i < 100000; i++) {
        size_t n = 1 + (size_t)(i % (int)sizeof buf);
        am2z_test_random_bytes(&seed, buf, n);
        if (i % 3 == 0)
            buf[0] = (uint8_t)(0x91 + (i % 4));      /* steer towards arrays */
        int rc = s_changes_decode_rc(buf, n);
        ck_assert(rc == AM2Z_OK || rc == AM2Z_EPROTO || rc == AM2Z_EINVAL);
    }

    /*  Every strict prefix of a valid encoding is malformed. */
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_str(ch, "a.b", "value");
    am2z_changes_delete(ch, "c");
    am2z_changes_append_int(ch, "d", 100000);
    uint8_t *wire = NULL;
    size_t wire_size = 0;
    ck_assert_int_eq(am2z_changes_encode(ch, &wire, &wire_size), AM2Z_OK);
    for (size_t n = 0; n < wire_size; n++)
        ck_assert_int_eq(s_changes_decode_rc(wire, n), AM2Z_EPROTO);
    free(wire);
    am2z_changes_destroy(&ch);

    ck_assert_int_eq(s_changes_decode_rc(NULL, 0), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_changes_decode(BYTES(0x90), NULL), AM2Z_EINVAL);
    /*  Wrong shapes and types. */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x80)), AM2Z_EPROTO);          /* {} */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x01)), AM2Z_EPROTO);    /* [1] */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x91, 0xa1, 'a')), AM2Z_EPROTO);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x92, 0x01, 0xa1, 'a')), AM2Z_EPROTO);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 'p', 'u', 't', 0xa1, 'a', 0x01)),
                     AM2Z_EPROTO);                                          /* bad op */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't', 0x01, 0x01)),
                     AM2Z_EPROTO);                                          /* int path */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't', 0xc4, 0x01, 'a', 0x01)),
                     AM2Z_EPROTO);                                          /* bin path */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x92, 0xa3, 's', 'e', 't', 0xa1, 'a')),
                     AM2Z_EPROTO);                                          /* set, no value */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 'd', 'e', 'l', 0xa1, 'a', 0xc0)),
                     AM2Z_EPROTO);                                          /* del with value */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x94, 0xa3, 's', 'e', 't', 0xa1, 'a', 0x01, 0x02)),
                     AM2Z_EPROTO);                                          /* four elements */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x92, 0xa3, 'd', 'e', 'l', 0xa1, 'a', 0x01)),
                     AM2Z_EPROTO);                                          /* trailing */
    /*  Huge declared lengths. */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0xdd, 0xff, 0xff, 0xff, 0xff)), AM2Z_EPROTO);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0xdd, 0xff, 0xff, 0xff, 0xff, 0x90)), AM2Z_EPROTO);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0xdd, 0xff, 0xff, 0xff, 0xff)), AM2Z_EPROTO);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't', 0xa1, 'a',
                                               0xdf, 0xff, 0xff, 0xff, 0xff)), AM2Z_EPROTO);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't',
                                               0xdb, 0xff, 0xff, 0xff, 0xff, 0x01)), AM2Z_EPROTO);
    /*  Bad paths are EINVAL, as when recording. */
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't', 0xa0, 0x01)),
                     AM2Z_EINVAL);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't', 0xa4, 'a', '.', '.', 'b', 0x01)),
                     AM2Z_EINVAL);
    ck_assert_int_eq(s_changes_decode_rc(BYTES(0x91, 0x93, 0xa3, 's', 'e', 't', 0xa3, 'a', 0x00, 'b', 0x01)),
                     AM2Z_EINVAL);                                          /* NUL in path */
    /*  A value nested deeper than a state may be. */
    size_t size;
    uint8_t *deep = s_nested(AM2Z_STATE_DEPTH_MAX + 1, &size);
    uint8_t *msg = malloc(size + 8);
    memcpy(msg, "\x91\x93\xa3set\xa1x", 8);
    memcpy(msg + 8, deep, size);
    ck_assert_int_eq(s_changes_decode_rc(msg, size + 8), AM2Z_EPROTO);
    free(msg);
    free(deep);
}
END_TEST

START_TEST(test_state_decode_rejects_garbage)
{
    uint64_t seed = 11;
    uint8_t buf[64];
    for (int i = 0; i < 100000; i++) {
        size_t n = 1 + (size_t)(i % (int)sizeof buf);
        am2z_test_random_bytes(&seed, buf, n);
        if (i % 3 == 0)
            buf[0] = (uint8_t)(0x81 + (i % 4));      /* steer towards maps */
        int rc = s_decode_rc(buf, n);
        ck_assert(rc == AM2Z_OK || rc == AM2Z_EPROTO);
    }

    am2z_state_t *st = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_str(ch, "a.b", "value");
    am2z_state_t *full = s_apply(st, &ch, 2);
    for (size_t n = 0; n < am2z_state_size(full); n++)
        ck_assert_int_eq(s_decode_rc(am2z_state_data(full), n), AM2Z_EPROTO);
    uint8_t *trail = malloc(am2z_state_size(full) + 1);
    memcpy(trail, am2z_state_data(full), am2z_state_size(full));
    trail[am2z_state_size(full)] = 0xc0;
    ck_assert_int_eq(s_decode_rc(trail, am2z_state_size(full) + 1), AM2Z_EPROTO);
    free(trail);
    am2z_state_destroy(&full);
    am2z_state_destroy(&st);

    ck_assert_int_eq(s_decode_rc(NULL, 0), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_state_decode(BYTES(0x80), NULL), AM2Z_EINVAL);
    uint64_t u;
    ck_assert_int_eq(am2z_state_meta_read(BYTES(0x80), NULL, &u), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_meta_read(BYTES(0x80), &u, NULL), AM2Z_EINVAL);
    ck_assert_int_eq(s_decode_rc(BYTES(0x80)), AM2Z_EPROTO);                 /* {} */
    ck_assert_int_eq(s_decode_rc(BYTES(0x91, 0x80)), AM2Z_EPROTO);           /* [{}] */
    ck_assert_int_eq(s_decode_rc(BYTES(0x81, 0xa8, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', 0x01)),
                     AM2Z_EPROTO);                                          /* metadata: 1 */
    ck_assert_int_eq(s_decode_rc(BYTES(0x81, 0xa8, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', 0x80)),
                     AM2Z_EPROTO);                                          /* metadata: {} */
    ck_assert_int_eq(s_decode_rc(BYTES(0xdf, 0xff, 0xff, 0xff, 0xff)), AM2Z_EPROTO);
    ck_assert_int_eq(s_decode_rc(BYTES(0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x01)), AM2Z_EPROTO);

    /*  Metadata fields: right shape accepted, each wrong one refused. */
    msgpack_sbuffer sb;
    s_pack_state(&sb, 1, "ok");
    ck_assert_int_eq(s_decode_rc(sb.data, sb.size), AM2Z_OK);
    msgpack_sbuffer_destroy(&sb);
    s_pack_state(&sb, 0, "ok");
    ck_assert_int_eq(s_decode_rc(sb.data, sb.size), AM2Z_EPROTO);
    msgpack_sbuffer_destroy(&sb);
    s_pack_state(&sb, -1, "ok");
    ck_assert_int_eq(s_decode_rc(sb.data, sb.size), AM2Z_EPROTO);
    msgpack_sbuffer_destroy(&sb);
    s_pack_state(&sb, 1, "not ok");
    ck_assert_int_eq(s_decode_rc(sb.data, sb.size), AM2Z_EPROTO);
    msgpack_sbuffer_destroy(&sb);
    s_pack_state(&sb, 1, "");
    ck_assert_int_eq(s_decode_rc(sb.data, sb.size), AM2Z_EPROTO);
    msgpack_sbuffer_destroy(&sb);

    /*  Two "metadata" keys are ambiguous. */
    msgpack_packer pk;
    s_sb_init(&sb, &pk);
    msgpack_pack_map(&pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_str_with_body(&pk, "metadata", 8);
        msgpack_pack_map(&pk, 4);
        msgpack_pack_str_with_body(&pk, "version", 7);
        msgpack_pack_int(&pk, 1 + i);
        msgpack_pack_str_with_body(&pk, "sessionId", 9);
        msgpack_pack_str_with_body(&pk, "s", 1);
        msgpack_pack_str_with_body(&pk, "createdAt", 9);
        msgpack_pack_int(&pk, 1);
        msgpack_pack_str_with_body(&pk, "lastUpdated", 11);
        msgpack_pack_int(&pk, 1);
    }
    ck_assert_int_eq(s_decode_rc(sb.data, sb.size), AM2Z_EPROTO);
    msgpack_sbuffer_destroy(&sb);

    /*  Missing field, string timestamp, duplicated field. */
    const char *bad[] = { "missing", "strtime", "dup" };
    for (size_t k = 0; k < 3; k++) {
        s_sb_init(&sb, &pk);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str_with_body(&pk, "metadata", 8);
        msgpack_pack_map(&pk, k == 0 ? 3 : k == 1 ? 4 : 5);
        msgpack_pack_str_with_body(&pk, "version", 7);
        msgpack_pack_int(&pk, 1);
        msgpack_pack_str_with_body(&pk, "sessionId", 9);
        msgpack_pack_str_with_body(&pk, "s", 1);
        msgpack_pack_str_with_body(&pk, "createdAt", 9);
        if (k == 1)
            msgpack_pack_str_with_body(&pk, "1", 1);
        else
            msgpack_pack_int(&pk, 1);
        if (k > 0) {
            msgpack_pack_str_with_body(&pk, "lastUpdated", 11);
            msgpack_pack_int(&pk, 1);
        }
        if (k == 2) {
            msgpack_pack_str_with_body(&pk, "version", 7);
            msgpack_pack_int(&pk, 2);
        }
        ck_assert_msg(s_decode_rc(sb.data, sb.size) == AM2Z_EPROTO, "%s", bad[k]);
        msgpack_sbuffer_destroy(&sb);
    }

    /*  Depth: exactly the limit decodes, one more does not. */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t size;
        uint8_t *deep = s_nested(AM2Z_STATE_DEPTH_MAX - 1 + extra, &size);
        s_pack_state(&sb, 1, "s");
        sb.data[0] = (char)0x83;                     /* one more pair */
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_str_with_body(&pk, "deep", 4);
        msgpack_sbuffer_write(&sb, (const char *)deep, size);
        ck_assert_int_eq(s_decode_rc(sb.data, sb.size), extra ? AM2Z_EPROTO : AM2Z_OK);
        msgpack_sbuffer_destroy(&sb);
        free(deep);
    }
}
END_TEST

START_TEST(test_state_bad_paths_rejected)
{
    char longp[AM2Z_PATH_LEN_MAX + 2];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';                 /* 257 bytes */
    const char *bad[] = { "", "a..b", ".a", "a.", ".", "..", "a.b.", longp };

    am2z_state_t *st = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    const uint8_t one[] = { 0x01 };
    int64_t v;
    am2z_vtype_t t;
    size_t n;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(am2z_changes_set_int(ch, bad[i], 1), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_changes_set_str(ch, bad[i], "x"), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_changes_set_raw(ch, bad[i], one, 1), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_changes_delete(ch, bad[i]), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_changes_append_int(ch, bad[i], 1), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_state_get_int(st, bad[i], &v), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_state_type(st, bad[i], &t), AM2Z_EINVAL);
        ck_assert_int_eq(am2z_state_get_count(st, bad[i], &n), AM2Z_EINVAL);
        ck_assert(!am2z_state_has(st, bad[i]));
    }
    /*  A bad path wins over a bad value: the path is checked first. */
    ck_assert_int_eq(am2z_changes_set_raw(ch, "a..b", NULL, 0), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_set_int(ch, NULL, 1), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_set_str(ch, "a", NULL), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_changes_set_int(NULL, "a", 1), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_get_int(st, NULL, &v), AM2Z_EINVAL);
    ck_assert_uint_eq(am2z_changes_count(ch), 0);

    /*  256 bytes is the longest path. */
    longp[AM2Z_PATH_LEN_MAX] = '\0';
    ck_assert_int_eq(am2z_changes_set_int(ch, longp, 1), AM2Z_OK);
    am2z_state_t *next = s_apply(st, &ch, 2);
    ck_assert_int_eq(am2z_state_get_int(next, longp, &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);

    /*  The deepest path (128 segments) sets and reads back. */
    char segs[AM2Z_PATH_LEN_MAX];
    for (size_t i = 0; i < sizeof segs; i += 2) {
        segs[i] = 'k';
        segs[i + 1] = '.';
    }
    segs[sizeof segs - 1] = '\0';                   /* "k.k.k...k", 255 bytes */
    ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_int(ch, segs, 1), AM2Z_OK);
    /*  128 nested maps exceed the depth limit: a resource error, not a crash. */
    ck_assert_int_eq(s_apply_rc(st, &ch, 0), AM2Z_ERESOURCE);

    am2z_state_destroy(&next);
    am2z_state_destroy(&st);
}
END_TEST

/*  Reads decode every msgpack integer and float width in place, keep
    get_raw's bytes as stored, and index arrays and nested maps. */
START_TEST(test_state_reads_every_number_width)
{
    static const struct {
        const char *path;
        uint8_t bytes[9];
        size_t size;
        int64_t want;
    } ints[] = {
        { "a", { 0x05 }, 1, 5 },
        { "b", { 0xff }, 1, -1 },
        { "c", { 0xe0 }, 1, -32 },
        { "d", { 0xcc, 0xc8 }, 2, 200 },
        { "e", { 0xcd, 0x12, 0x34 }, 3, 0x1234 },
        { "f", { 0xce, 0x89, 0xab, 0xcd, 0xef }, 5, 0x89abcdefLL },
        { "g", { 0xcf, 0, 0, 0, 1, 0, 0, 0, 0 }, 9, 0x100000000LL },
        { "h", { 0xd0, 0x80 }, 2, -128 },
        { "i", { 0xd0, 0x7f }, 2, 127 },
        { "j", { 0xd1, 0xff, 0x00 }, 3, -256 },
        { "k", { 0xd2, 0xff, 0xff, 0xff, 0xfe }, 5, -2 },
        { "l", { 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0 }, 9, INT64_MIN },
        { "m", { 0xd3, 0, 0, 0, 0, 0, 0, 0, 9 }, 9, 9 },
    };
    am2z_state_t *s1 = s_new(1);
    am2z_changes_t *ch = am2z_changes_new();
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        ck_assert_int_eq(am2z_changes_set_raw(ch, ints[k].path, ints[k].bytes, ints[k].size),
                         AM2Z_OK);
    const uint8_t f32[] = { 0xca, 0x3f, 0xc0, 0x00, 0x00 };            /* 1.5f */
    const uint8_t f64[] = { 0xcb, 0xc0, 0x04, 0, 0, 0, 0, 0, 0 };      /* -2.5 */
    const uint8_t arr[] = { 0x93, 0x01, 0x81, 0xa1, 'x', 0xc3, 0xa2, 'h', 'i' };
    am2z_changes_set_raw(ch, "f32", f32, sizeof f32);
    am2z_changes_set_raw(ch, "f64", f64, sizeof f64);
    am2z_changes_set_raw(ch, "arr", arr, sizeof arr);
    am2z_state_t *st = s_apply(s1, &ch, 2);

    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        int64_t v = 0;
        double d = 0;
        ck_assert_int_eq(am2z_state_get_int(st, ints[k].path, &v), AM2Z_OK);
        ck_assert_int_eq(v, ints[k].want);
        ck_assert_int_eq(am2z_state_get_float(st, ints[k].path, &d), AM2Z_OK);
        ck_assert_double_eq(d, (double)ints[k].want);
        uint8_t *raw = NULL;
        size_t raw_size = 0;
        ck_assert_int_eq(am2z_state_get_raw(st, ints[k].path, &raw, &raw_size), AM2Z_OK);
        ck_assert_uint_eq(raw_size, ints[k].size);
        ck_assert_mem_eq(raw, ints[k].bytes, raw_size);
        free(raw);
    }
    double d = 0;
    ck_assert_int_eq(am2z_state_get_float(st, "f32", &d), AM2Z_OK);
    ck_assert_double_eq(d, 1.5);
    ck_assert_int_eq(am2z_state_get_float(st, "f64", &d), AM2Z_OK);
    ck_assert_double_eq(d, -2.5);
    int64_t v;
    ck_assert_int_eq(am2z_state_get_int(st, "f32", &v), AM2Z_ETYPE);
    ck_assert_int_eq(am2z_state_get_int(st, "arr.0", &v), AM2Z_OK);
    ck_assert_int_eq(v, 1);
    bool b = false;
    ck_assert_int_eq(am2z_state_get_bool(st, "arr.1.x", &b), AM2Z_OK);
    ck_assert(b);
    char buf[4];
    ck_assert_int_eq(am2z_state_get_strcpy(st, "arr.2", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "hi");
    ck_assert_int_eq(am2z_state_get_int(st, "arr.3", &v), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_get_int(st, "arr.0.x", &v), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_get_int(st, "metadata.version", &v), AM2Z_OK);
    ck_assert_int_eq(v, 2);
    am2z_state_destroy(&st);
    am2z_state_destroy(&s1);
}
END_TEST

/*  from_map_meta = from_map then with_metadata, in one build. */
START_TEST(test_state_from_map_meta)
{
    const uint8_t map[] = { 0x82, 0xa1, 'a', 0x01, 0xa8, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a',
                            0x02 };
    am2z_state_t *one = NULL, *two = NULL, *want = NULL;
    ck_assert_int_eq(am2z_state_from_map_meta(SID, map, sizeof map, 7, 100, 200, &one), AM2Z_OK);
    ck_assert_int_eq(am2z_state_from_map(SID, map, sizeof map, 50, &two), AM2Z_OK);
    ck_assert_int_eq(am2z_state_with_metadata(two, SID, 7, 100, 200, &want), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(one), 7);
    ck_assert_uint_eq(am2z_state_created_at(one), 100);
    ck_assert_uint_eq(am2z_state_last_updated(one), 200);
    ck_assert_uint_eq(am2z_state_size(one), am2z_state_size(want));
    ck_assert_mem_eq(am2z_state_data(one), am2z_state_data(want), am2z_state_size(want));
    am2z_state_t *bad = NULL;
    ck_assert_int_eq(am2z_state_from_map_meta(SID, map, sizeof map, 0, 1, 1, &bad), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_from_map_meta("bad id", map, sizeof map, 1, 1, 1, &bad),
                     AM2Z_EINVAL);
    ck_assert_int_eq(am2z_state_from_map_meta(SID, map, sizeof map - 1, 1, 1, 1, &bad),
                     AM2Z_EPROTO);
    ck_assert_ptr_null(bad);
    am2z_state_destroy(&one);
    am2z_state_destroy(&two);
    am2z_state_destroy(&want);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_state_new_has_version_one_and_metadata);
    tcase_add_test(tc, test_state_peek_reads_version_and_bounds_depth);
    tcase_add_test(tc, test_state_round_trip_encode_decode);
    tcase_add_test(tc, test_state_apply_bumps_version_and_last_updated);
    tcase_add_test(tc, test_state_apply_never_mutates_input);
    tcase_add_test(tc, test_state_nested_path_set_creates_maps);
    tcase_add_test(tc, test_state_set_through_scalar_is_type_error);
    tcase_add_test(tc, test_state_delete_missing_path_is_ok);
    tcase_add_test(tc, test_state_append_creates_and_extends_array);
    tcase_add_test(tc, test_state_raw_values_round_trip);
    tcase_add_test(tc, test_state_metadata_is_reserved);
    tcase_add_test(tc, test_state_array_index_read);
    tcase_add_test(tc, test_state_typed_getters_report_type_errors);
    tcase_add_test(tc, test_state_max_size_is_resource_error);
    tcase_add_test(tc, test_state_from_map_replaces_metadata);
    tcase_add_test(tc, test_state_with_metadata);
    tcase_add_test(tc, test_changes_encode_decode_round_trip);
    tcase_add_test(tc, test_changes_decode_rejects_garbage);
    tcase_add_test(tc, test_state_decode_rejects_garbage);
    tcase_add_test(tc, test_state_bad_paths_rejected);
    tcase_add_test(tc, test_state_reads_every_number_width);
    tcase_add_test(tc, test_state_from_map_meta);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
