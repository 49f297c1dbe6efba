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

#ifdef __cplusplus
}
#endif
#endif
