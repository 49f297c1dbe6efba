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

    The order processors use the AM2Z README state shape:
        {order: {id, items: [{sku, qty, price}], customer: {email}}}

    Thread safety: the processors keep no state; any number may run at once.
*/
#ifndef AM2Z_EXAMPLES_H_INCLUDED
#define AM2Z_EXAMPLES_H_INCLUDED

#include <stddef.h>

#include "am2z_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  The definitions, in the order above. Static storage: never freed.
    *count receives the number of entries. */
const am2z_processor_def_t *am2z_example_processors(size_t *count);

#ifdef __cplusplus
}
#endif
#endif
