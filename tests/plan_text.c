/* tests/plan_text.c: see plan_text.h. */
#define _POSIX_C_SOURCE 200809L /* setenv in testutil.h */
#include "plan_text.h"

#include <stdio.h>

#include "plan/plan.h"
#include "testutil.h"

mpt_plan_t *test_plan(const test_plan_spec_t *sp, const mpt_model_t *m, size_t ndevices)
{
    char text[8192];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "{\"mpt_plan\": 1, \"dp\": %zu, \"pp\": %zu, \"tp\": %zu, "
                                  "\"microbatches\": %zu, \"batch\": %zu, \"schedule\": "
                                  "\"gpipe\", \"optimizer_slots\": %d, \"zero\": %d, "
                                  "\"predicted_step_s\": 0.001, \"breakdown\": {\"compute_s\": "
                                  "0, \"bubble_s\": 0, \"p2p_s\": 0, \"allreduce_s\": 0}, "
                                  "\"replicas\": [",
                                  sp->dp, sp->pp, sp->tp, sp->microbatches, sp->batch,
                                  sp->optimizer_slots, sp->zero);
    for (size_t r = 0; r < sp->dp; r++) {
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "%s{\"batch_share\": %.17g, \"stages\": [", r ? ", " : "",
                                sp->shares[r]);
        for (size_t s = 0; s < sp->pp; s++) {
            len += (size_t)snprintf(text + len, sizeof text - len,
                                    "%s{\"layers\": [%zu, %zu], \"fwd_s\": 0, \"bwd_s\": 0, "
                                    "\"devices\": [",
                                    s ? ", " : "", sp->cuts[s], sp->cuts[s + 1] - 1);
            for (size_t g = 0; g < sp->tp; g++)
                len += (size_t)snprintf(
                    text + len, sizeof text - len,
                    "%s{\"device\": %zu, \"fraction\": %.17g, \"memory_bytes\": 0}",
                    g ? ", " : "", (r * sp->pp + s) * sp->tp + g,
                    sp->fractions ? sp->fractions[g] : 1.0 / (double)sp->tp);
            len += (size_t)snprintf(text + len, sizeof text - len, "]}");
        }
        len += (size_t)snprintf(text + len, sizeof text - len, "]}");
    }
    ck_assert_uint_lt(len, sizeof text - 32); /* the text was not cut */
    snprintf(text + len, sizeof text - len, "], \"alternatives\": []}");
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt__plan_from_json(text, "test plan", m->nlayers, ndevices, &p));
    ck_assert_mpt_ok(mpt__plan_roles(p, m)); /* as mpt_plan_load */
    return p;
}
