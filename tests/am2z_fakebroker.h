/*  am2z_fakebroker.h — a test playing the broker's backend: a real ROUTER
    socket on tcp://127.0.0.1:* (port read back) that speaks the codec.

    The fake broker remembers the identity of the last peer it heard from
    and sends to it. Every receive is bounded by a timeout. Failures of our
    own calls fail the test (ck_assert); a timeout is a return value so a
    test can assert that nothing arrives.
*/
#ifndef AM2Z_FAKEBROKER_H_INCLUDED
#define AM2Z_FAKEBROKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_codec.h"
#include "am2z_state.h"

typedef struct am2z_fakebroker_t am2z_fakebroker_t;

/*  Binds a ROUTER on tcp://127.0.0.1:*. Fails the test on error. */
am2z_fakebroker_t *am2z_fakebroker_new(void);

/*  NULL-safe, idempotent. */
void am2z_fakebroker_destroy(am2z_fakebroker_t **self_p);

/*  "tcp://127.0.0.1:PORT"; borrowed until destroy. */
const char *am2z_fakebroker_endpoint(const am2z_fakebroker_t *self);

/*  When true (default false), HEARTBEATs are returned by recv like other
    messages; when false they are counted and skipped. */
void am2z_fakebroker_keep_heartbeats(am2z_fakebroker_t *self, bool keep);

/*  HEARTBEATs seen so far (returned or skipped). */
size_t am2z_fakebroker_heartbeats(const am2z_fakebroker_t *self);

/*  Receives and decodes the next message within timeout_ms. Returns 0 with
    *msg filled (caller clears it), or -1 on timeout. A message that does not
    decode fails the test. The sender's identity becomes the peer. */
int am2z_fakebroker_recv(am2z_fakebroker_t *self, am2z_msg_t *msg, int timeout_ms);

/*  As recv, but the message must be `cmd` (fails the test otherwise, or on
    timeout). */
void am2z_fakebroker_expect(am2z_fakebroker_t *self, am2z_cmd_t cmd,
                            am2z_msg_t *msg, int timeout_ms);

/*  Identity of the current peer (copy; NUL-terminated hex, for comparing
    connections). */
void am2z_fakebroker_peer(const am2z_fakebroker_t *self, char *out, size_t size);

/*  Encodes and sends msg to the current peer. */
void am2z_fakebroker_send(am2z_fakebroker_t *self, const am2z_msg_t *msg);

/*  Sends msgs[0..n) to the current peer as one BATCH. */
void am2z_fakebroker_send_batch(am2z_fakebroker_t *self, const am2z_msg_t *msgs, size_t n);

/*  BATCHes received so far (recv returns their commands one by one). */
size_t am2z_fakebroker_batches(const am2z_fakebroker_t *self);

/*  Sends raw frames after the identity: nframes (1..3) of (data, size). */
void am2z_fakebroker_send_raw(am2z_fakebroker_t *self, size_t nframes,
                              const void *const *data, const size_t *sizes);

/*  Sends JOB {job id, attempt, proc, session, state, timeout}; the id is
    written into job_id (AM2Z_ID_LEN + 1 bytes). */
void am2z_fakebroker_job(am2z_fakebroker_t *self, const char *proc,
                         const am2z_state_t *state, uint32_t attempt,
                         uint64_t timeout_ms, char *job_id);

/*  A version-1 state of `session` with *changes_p applied (taken; may be
    NULL for an empty state). Caller owns the result. */
am2z_state_t *am2z_fakebroker_state(const char *session, am2z_changes_t **changes_p);

/*  Receives messages until the DONE of job_id, collecting the EVENTs of
    that job into events (up to max; *nevents set). Other messages are
    skipped. Fails the test on timeout. *done is filled (caller clears). */
void am2z_fakebroker_wait_done(am2z_fakebroker_t *self, const char *job_id,
                               am2z_msg_t *done, am2z_msg_t *events,
                               size_t max, size_t *nevents, int timeout_ms);

/*  Receives messages until the DONE of job_id, and fails the test when
    anything else but a HEARTBEAT comes first (or on timeout): for "the
    worker sent nothing else". *done is filled (caller clears). */
void am2z_fakebroker_expect_done(am2z_fakebroker_t *self, const char *job_id,
                                 am2z_msg_t *done, int timeout_ms);

#endif
