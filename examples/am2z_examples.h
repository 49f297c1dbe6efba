/*  am2z_examples.h — the example processors (served by am2z-example-worker,
    used by the demo and the tests).

        increment          count += 1; message = "Count is now N"
        validate-email     email must look like an address (ValidationError)
        append             appends state.value to the array items
        sleep              sleeps state.ms (10 ms steps); stops when cancelled
        fail               fails with the category named by state.category
        flaky              fails (retryable) the first state.failures attempts;
                           retry: 3 attempts, fixed 10 ms
        emit               events custom:one, custom:two, progress 50
        validate-order     order.id and non-empty order.items; order.status
        check-inventory    inventory.reserved, or BusinessError OUT_OF_STOCK
        process-payment    payment.status "paid", payment.amount
        create-shipment    shipment.trackingNumber
        send-confirmation  confirmation.sent
        update-inventory   inventory.updated
        fail-retry         as fail; retry: 2 attempts, fixed 10 ms
        backoff            always fails (retryable execution error);
                           retry: 4 attempts, exponential 100 ms x2
        sleep-stubborn     sleeps state.ms in one go; ignores cancellation
        double, add10      count *= 2, count += 10
        append-a/b/c       appends "A" / "B" / "C" to items
        set-status-a/b     status = "a" / "b"
        count-branches     merge processor: mergedBranches = len($branches)
        pick-tier          route selector: selects state.tier (default basic)
        tag-premium/basic  handledBy = "premium" / "basic"
        bump               count += 1; BusinessError BAD_PAYLOAD when bad
        tick               sleeps state.ms, then steps += 1
        call-double-twice  am2z_ctx_call(double) twice on its input, then
                           count = the result's count + 10
        call-calc          am2z_ctx_call(calc) (a composite); count = its count
        recurse            calls itself state.n levels deep (n - 1 each);
                           depth = the innermost call depth
        progress           progress 25, 50; waits for the file state.gate
                           (if given, at most state.waitMs); 75, 100;
                           progress = 100
        gate               waits until the file state.file exists (when
                           named; polls, honours cancellation); ticket =
                           this worker's run order 1, 2, ... (scheduling)
        gate-urgent        as gate, default priority 5
        rated              count += 1; rate limit 20 per 1000 ms
        capped             sleeps state.ms (50); cap 2 across workers;
                           active / maxActive = what this worker saw
        later              count += 1; default delay 1000 ms

    Composites (am2z_example_composites):
        process-order      chain(validate-order, check-inventory,
                           process-payment, fulfil-order)
        fulfil-order       parallel(create-shipment, send-confirmation,
                           update-inventory)
        calc               chain(increment, double, add10)
        calc-fail          chain(increment, fail, add10)
        abc                parallel(append-a, append-b, append-c)
        ab-merged          parallel(append-a, append-b), merge count-branches
        status-race        parallel(set-status-a, set-status-b)
        status-strict      the same, strict
        tier-route         route on state.tier: premium, basic
        tier-select        route by pick-tier: premium; fallback tag-basic
        kind-route         route on state.kind: order -> process-order,
                           calc -> calc
        bump-all           batch of bump over state.payloads
        ticks              chain of five ticks
        rated-chain        chain of five rated (scheduling)

    The order processors use the AM2Z README state shape:
        {order: {id, items: [{sku, qty, price}], customer: {email}}}

    Thread safety: any number may run at once. Only gate (a ticket counter)
    and capped (its concurrency counters) keep process-wide state, in atomics.
*/
#ifndef AM2Z_EXAMPLES_H_INCLUDED
#define AM2Z_EXAMPLES_H_INCLUDED

#include <stddef.h>

#include "am2z_compose.h"
#include "am2z_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  The definitions, in the order above. Static storage: never freed.
    *count receives the number of entries. */
const am2z_processor_def_t *am2z_example_processors(size_t *count);

/*  The example composites, as above. Static storage: never freed. */
const am2z_composite_def_t *am2z_example_composites(size_t *count);

#ifdef __cplusplus
}
#endif
#endif
