/*  am2z_merge.h — three-way merge of branch states (parallel, batch).

    Every branch of a parallel step starts from the same input state and
    produces its own next state. The merge combines them against the input,
    key by key (user keys only; "metadata" is the runtime's):

    - a key no branch changed keeps the input's value;
    - a key changed by branches that all agree (same bytes, or all deleted
      it) takes that value;
    - maps changed by several branches merge recursively, key by key;
    - arrays that every changing branch only appended to (the input array
      is a prefix of each) keep all appended elements, in branch order;
    - anything else is a true conflict: the later branch (highest index)
      wins, and the conflict is reported (path + winning branch). In strict
      mode a conflict fails the merge instead.

    The merged state has the input's session id and createdAt, version =
    input version + 1 (a parallel step is one step), lastUpdated = now_ms.

    Thread safety: reentrant; inputs are only read.
*/
#ifndef AM2Z_MERGE_H_INCLUDED
#define AM2Z_MERGE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_error.h"
#include "am2z_state.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  One true conflict. path is dotted ("order.status"); a non-string key
    appears as "?". */
typedef struct {
    char path[AM2Z_PATH_LEN_MAX + 1];
    size_t winner;                /* index of the branch whose value was kept */
} am2z_merge_conflict_t;

/*  Merges branches[0..n) against input. On AM2Z_OK *out is the merged state
    (caller owns) and, when conflicts is not NULL, *conflicts / *nconflicts
    list the true conflicts (caller frees *conflicts; NULL when none).
    Returns AM2Z_OK, AM2Z_EINVAL (no branches, a NULL state, or a branch of
    another session), AM2Z_ECONFLICT (strict and a conflict: *conflicts
    still lists them when asked), AM2Z_ERESOURCE (merged state larger than
    max_size; 0 = no limit), AM2Z_ENOMEM. */
int am2z_merge_states(const am2z_state_t *input,
                      const am2z_state_t *const *branches, size_t n,
                      bool strict, uint64_t now_ms, size_t max_size,
                      am2z_state_t **out,
                      am2z_merge_conflict_t **conflicts, size_t *nconflicts);

/*  Batch payloads: sets every top-level key of `map` (one msgpack map;
    a "metadata" key is ignored, a "sessionId" key too when skip_session)
    on base's user keys, replacing existing values. The result keeps base's
    metadata (same version). Returns AM2Z_OK, AM2Z_EPROTO (map is not one
    map), AM2Z_ERESOURCE (larger than max_size; 0 = no limit), ENOMEM. */
int am2z_state_overlay(const am2z_state_t *base, const uint8_t *map, size_t size,
                       bool skip_session, size_t max_size, am2z_state_t **out);

/*  The string at top-level key `key` of a msgpack map, copied into buf.
    Returns AM2Z_OK, AM2Z_ENOTFOUND (absent or not a string),
    AM2Z_ERESOURCE (does not fit), AM2Z_EPROTO (not a map). */
int am2z_map_get_str(const uint8_t *map, size_t size, const char *key,
                     char *buf, size_t buf_size);

/*  The merge processor's input: input's user keys plus "$branches" = the
    array of the branch states (whole states, in branch order); same
    metadata as input. Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_ENOMEM. */
int am2z_state_with_branches(const am2z_state_t *input,
                             const am2z_state_t *const *branches, size_t n,
                             am2z_state_t **out);

/*  The same state without top-level user key `key` (metadata unchanged).
    A missing key gives a copy. Returns AM2Z_OK, AM2Z_EINVAL, ENOMEM. */
int am2z_state_without_key(const am2z_state_t *state, const char *key,
                           am2z_state_t **out);

/*  Calls fn for each element of the msgpack array at data (its exact
    bytes, borrowed for the call) with its index; fn returns 0 to go on.
    Returns AM2Z_OK, AM2Z_EPROTO (not one array), or fn's non-zero value. */
typedef int (am2z_array_each_fn)(const uint8_t *elem, size_t size, size_t index,
                                 void *arg);
int am2z_array_each(const uint8_t *data, size_t size, am2z_array_each_fn *fn,
                    void *arg);

#ifdef __cplusplus
}
#endif
#endif
