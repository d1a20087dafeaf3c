/*
 * tests/plan_text.h: a plan written as the plan JSON a user would give
 * (docs/plan.md) and loaded as mpt_plan_load does, for tests that need a
 * plan the planner would not choose.
 */
#ifndef MPT_TESTS_PLAN_TEXT_H
#define MPT_TESTS_PLAN_TEXT_H

#include <stddef.h>

#include "mpt.h"

typedef struct {
    size_t dp, pp, tp, microbatches, batch;
    const double *shares;    /* dp batch shares */
    const size_t *cuts;      /* pp + 1 layer boundaries: stage s runs [cuts[s], cuts[s+1]) */
    const double *fractions; /* tp member fractions; NULL: 1/tp each */
    int optimizer_slots, zero;
} test_plan_spec_t;

/* The plan of spec (GPipe), replica r stage s member g on device
 * (r * pp + s) * tp + g, for model m on ndevices devices, with its
 * tensor-parallel roles; fails the test if the text is refused. */
mpt_plan_t *test_plan(const test_plan_spec_t *spec, const mpt_model_t *m, size_t ndevices);

#endif
