/*
 * trace/metrics.h: what the training loop needs of the metrics file
 * beyond mpt.h's mpt_metrics_*.  Never installed.
 */
#ifndef MPT_TRACE_METRICS_H
#define MPT_TRACE_METRICS_H

#include "mpt.h"

/* Drops the lines of steps after `step` from an open metrics file (as a
 * resumed run's file loses them when opened), before a run that went back
 * to `step` logs them again: every step appears once.  On failure `m`
 * still closes (mpt_metrics_close). */
int mpt__metrics_drop_after(mpt_metrics_t *m, uint64_t step);

#endif
