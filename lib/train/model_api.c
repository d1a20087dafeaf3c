/*
 * train/model_api.c: the public model API (mpt.h "Models") over nn/model.c:
 * loading, the accessors and the layer table.  The layer kinds and the
 * parser live in lib/nn; this file only wraps them as opaque handles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layer.h"

/* ---- models ---------------------------------------------------------------- */

int mpt_model_load(const char *path, mpt_model_t **out)
{
    if (!path || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_load: NULL argument");
    return mpt__model_load(path, out);
}

void mpt_model_free(mpt_model_t *model)
{
    mpt__model_free(model);
}

const char *mpt_model_name(const mpt_model_t *model)
{
    return model->name;
}

size_t mpt_model_param_count(const mpt_model_t *model)
{
    return model->param_floats;
}

size_t mpt_model_input_floats(const mpt_model_t *model)
{
    return mpt__shape_numel(&model->input);
}

int mpt_model_classes(const mpt_model_t *model)
{
    return model->classes;
}

size_t mpt_model_labels_per_sample(const mpt_model_t *model)
{
    return model->labels_per_sample;
}

int mpt_model_describe(const mpt_model_t *m, char **text)
{
    size_t cap = 256 + 128 * (m->nlayers + 2), len = 0;
    char *s = malloc(cap), shape[64];
    if (!(*text = s))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    len += (size_t)snprintf(s + len, cap - len, "  %-3s %-22s %-16s %10s %12s\n", "#", "layer",
                            "output", "params", "MFLOP/sample");
    for (size_t i = 0; i < m->nlayers; i++) {
        const mpt__layer_t *l = &m->layers[i];
        size_t params = 0;
        for (int q = 0; q < l->nparams; q++)
            params += l->params[q].numel;
        len += (size_t)snprintf(s + len, cap - len, "  %-3zu %-22s %-16s %10zu %12.3f\n", i,
                                l->kind->name,
                                l->kind->is_loss ? "loss" : mpt__shape_str(&l->out, shape, sizeof shape),
                                params, l->kind->flops(l, 1, 0) * 1e-6);
    }
    snprintf(s + len, cap - len, "  %zu parameters (%.2f MB in fp32)\n", m->param_floats,
             m->param_floats * 4e-6);
    return MPT_OK;
}
