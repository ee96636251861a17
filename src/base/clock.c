/* clock.c — deadline arithmetic over vt_now_ns (the clock itself is read in
 * src/base/<os>/time.c). */
#include "platform.h"

int64_t vt_deadline_after(int64_t delay_ns)
{
    int64_t now = vt_now_ns();
    if (delay_ns <= 0)
        return now;
    /* now > 0, so INT64_MAX - now cannot overflow; a deadline past it is as
     * good as for ever, but stays a real time so comparisons keep working. */
    if (delay_ns > INT64_MAX - now)
        return INT64_MAX;
    return now + delay_ns;
}
