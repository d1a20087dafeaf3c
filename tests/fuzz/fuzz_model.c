/*
 * tests/fuzz/fuzz_model.c: libFuzzer harness for the model description
 * reader (mpt_model_from_json -> nn/model.c and every layer kind's
 * configure/infer).  Property beyond "no crash, no leak, no UB": a model
 * that is accepted can be described (mpt_model_describe, which walks
 * every layer) and writes a description (mpt_model_to_json) that reads
 * back to a model with the same parameter count, input and classes.
 */
#include <stdint.h>
#include <stdlib.h>

#include "mpt.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size), *again = NULL, *desc = NULL;
    mpt_model_t *m = NULL, *m2 = NULL;
    if (!text)
        return 0;
    if (mpt_model_from_json(text, &m) == MPT_OK) {
        FUZZ_CHECK(m != NULL);
        FUZZ_CHECK(mpt_model_to_json(m, &again) == MPT_OK);
        FUZZ_CHECK(mpt_model_from_json(again, &m2) == MPT_OK);
        FUZZ_CHECK(mpt_model_param_count(m2) == mpt_model_param_count(m));
        FUZZ_CHECK(mpt_model_input_floats(m2) == mpt_model_input_floats(m));
        FUZZ_CHECK(mpt_model_classes(m2) == mpt_model_classes(m));
        FUZZ_CHECK(mpt_model_describe(m, &desc) == MPT_OK && desc);
    } else {
        FUZZ_CHECK(m == NULL);
    }
    mpt_model_free(m2);
    mpt_model_free(m);
    free(again);
    free(desc);
    free(text);
    return 0;
}
