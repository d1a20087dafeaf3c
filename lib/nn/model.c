/*
 * nn/model.c: a model description (docs/model.md) read from JSON into a
 * sequence of layers with their shapes chained and checked, parameters laid
 * out in one flat buffer, and counter-based initial values.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "nn/layer_desc.h"

void mpt__model_free(mpt__model_t *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->json);
    free(m->layers);
    free(m);
}

static int read_input(const json_t *root, const char *where, mpt__shape_t *out)
{
    json_t *in = json_object_get(root, "input");
    size_t n = json_array_size(in);
    if (!json_is_array(in) || (n != 1 && n != 3))
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: \"input\" must be [features] or [channels, height, width]", where);
    out->ndim = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(in, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return mpt__fail(MPT_ERR_PARSE, "%s: \"input\"[%zu] must be a positive integer",
                             where, i);
        out->d[i] = (size_t)json_integer_value(v);
    }
    return MPT_OK;
}

/* Keys a layer object may have, beyond "kind"; anything else is a typo. */
static int check_keys(const json_t *spec, const char *where)
{
    static const char *known[] = {"kind", "units", "channels", "kernel", "stride", "padding",
                                  "p", "eps", "vocab", "dim", "heads", "comment"};
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)spec, key, value) {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(known[i], key) != 0)
            i++;
        if (i == sizeof known / sizeof known[0])
            return mpt__fail(MPT_ERR_PARSE, "%s: unknown attribute \"%s\"", where, key);
    }
    return MPT_OK;
}

/* Sizes the kernels can index (32 bits) and no product that overflowed:
 * an absurd attribute fails here, naming the layer, not in a kernel. */
static int check_sizes(const mpt__layer_t *l, const char *where)
{
    const double limit = 4294967295.0;
    double out = 1;
    for (int i = 0; i < l->out.ndim; i++)
        out *= (double)l->out.d[i];
    if (out > limit)
        return mpt__fail(MPT_ERR_PARSE, "%s: an output of %.0f values per sample is too large",
                         where, out);
    for (int q = 0; q < l->nparams; q++) {
        double n = 1;
        for (int i = 0; i < l->params[q].ndim; i++)
            n *= (double)l->params[q].dims[i];
        if (n > limit)
            return mpt__fail(MPT_ERR_PARSE, "%s: %s of %.0f values is too large", where,
                             l->params[q].name, n);
    }
    return MPT_OK;
}

/* A tied reader (lm_head) reads the weight of the nearest tied owner
 * before it (GPT-2 ties the head to the embedding): it gets a copy of that
 * parameter's description, and the owner's backward then adds its
 * gradient to the reader's. */
static int tie_to_owner(mpt__model_t *m, mpt__layer_t *l, const char *where)
{
    for (int i = l->index - 1; i >= 0; i--)
        if (m->layers[i].kind->flags & MPT_KIND_TIED_OWNER) {
            m->layers[i].params[0].shared = 1;
            l->tied = m->layers[i].params[0];
            l->tied_layer = i;
            return MPT_OK;
        }
    return mpt__fail(MPT_ERR_PARSE, "%s: needs an embedding layer before it (the head's weight "
                     "is the embedding's, tied)", where);
}

int mpt__model_from_json(const json_t *root, const char *where, mpt__model_t **out)
{
    int status = MPT_OK;
    char at[512];
    mpt__model_t *m = NULL;
    json_t *layers = json_object_get(root, "layers");
    const char *name = json_string_value(json_object_get(root, "name"));

    *out = NULL;
    if (!json_is_object(root))
        return mpt__fail(MPT_ERR_PARSE, "%s: a model must be a JSON object", where);
    if (!json_is_array(layers) || json_array_size(layers) < 2)
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: \"layers\" must be an array of at least one layer and the loss",
                         where);
    if (json_array_size(layers) > MPT_RNG_MAX_LAYERS)
        return mpt__fail(MPT_ERR_PARSE, "%s: %zu layers, more than the %d mpt supports", where,
                         json_array_size(layers), MPT_RNG_MAX_LAYERS);
    if (!(m = calloc(1, sizeof *m)) ||
        !(m->layers = calloc(json_array_size(layers), sizeof *m->layers)) ||
        !(m->name = mpt__strdup(name ? name : "model")) ||
        !(m->json = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    MPT_TRY(read_input(root, where, &m->input));
    m->nlayers = json_array_size(layers);
    mpt__shape_t shape = m->input;
    for (size_t i = 0; i < m->nlayers; i++) {
        const json_t *spec = json_array_get(layers, i);
        const char *kind = json_string_value(json_object_get(spec, "kind"));
        mpt__layer_t *l = &m->layers[i];
        snprintf(at, sizeof at, "%s: layers[%zu] (%s)", where, i, kind ? kind : "?");
        if (!json_is_object(spec) || !kind) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: needs a \"kind\" string", at);
            goto out;
        }
        if (!(l->kind = mpt__layer_kind(kind))) {
            char known[512];
            status = mpt__fail(MPT_ERR_PARSE, "%s: unknown kind \"%s\" (known: %s)", at, kind,
                               mpt__layer_kind_names(known, sizeof known));
            goto out;
        }
        MPT_TRY(check_keys(spec, at));
        l->index = (int)i;
        l->in = shape;
        l->tied_layer = -1;
        if (l->kind->flags & MPT_KIND_TIED_READER)
            MPT_TRY(tie_to_owner(m, l, at));
        if (l->kind->configure)
            MPT_TRY(l->kind->configure(l, spec, at));
        MPT_TRY(l->kind->infer(l, at));
        MPT_TRY(check_sizes(l, at));
        if (l->kind->is_loss != (i + 1 == m->nlayers)) {
            status = mpt__fail(MPT_ERR_PARSE, l->kind->is_loss
                                                  ? "%s: a loss must be the last layer"
                                                  : "%s: the last layer must be a loss "
                                                    "(softmax_cross_entropy)",
                               at);
            goto out;
        }
        for (int q = 0; q < l->nparams; q++) {
            l->params[q].offset = m->param_floats;
            m->param_floats += l->params[q].numel;
        }
        shape = l->out;
    }
    for (size_t i = 0; i < m->nlayers; i++) {
        m->layers[i].first_computing = !m->layers[i].kind->is_view;
        if (m->layers[i].first_computing)
            break;
    }
    const mpt__shape_t *logits = &m->layers[m->nlayers - 1].in;
    m->classes = (int)logits->d[logits->ndim - 1];
    m->labels_per_sample = mpt__shape_numel(logits) / (size_t)m->classes;
    if (m->param_floats == 0)
        status = mpt__fail(MPT_ERR_PARSE, "%s: the model has no parameters to train", where);
out:
    if (status < 0) {
        mpt__model_free(m);
        m = NULL;
    }
    *out = m;
    return status;
}

int mpt__model_load(const char *path, mpt__model_t **out)
{
    json_t *root = NULL;
    int status = mpt__json_load_file(path, &root);
    *out = NULL;
    if (status == MPT_OK)
        status = mpt__model_from_json(root, path, out);
    json_decref(root);
    return status;
}

void mpt__model_init_params(const mpt__model_t *m, uint64_t seed, float *params)
{
    for (size_t i = 0; i < m->nlayers; i++)
        for (int q = 0; q < m->layers[i].nparams; q++) {
            const mpt__param_t *p = &m->layers[i].params[q];
            if (p->init_std > 0) {
                mpt__rng_normal(seed, p->stream, 0, p->init_std, params + p->offset, p->numel);
                continue;
            }
            if (p->fan_in == 0) {
                for (size_t j = 0; j < p->numel; j++)
                    params[p->offset + j] = p->init_value;
                continue;
            }
            float bound = (float)(1.0 / sqrt((double)p->fan_in));
            mpt__rng_uniform(seed, p->stream, 0, bound, params + p->offset, p->numel);
        }
}

size_t mpt__model_max_activation(const mpt__model_t *m)
{
    size_t most = mpt__shape_numel(&m->input);
    for (size_t i = 0; i < m->nlayers; i++) {
        size_t n = mpt__shape_numel(&m->layers[i].out);
        if (n > most)
            most = n;
    }
    return most;
}

void mpt__model_param_range(const mpt__model_t *m, size_t first, size_t last, size_t *p0,
                            size_t *np)
{
    size_t lo = m->param_floats, hi = 0;
    for (size_t i = first; i <= last && i < m->nlayers; i++)
        for (int q = 0; q < m->layers[i].nparams; q++) {
            const mpt__param_t *pr = &m->layers[i].params[q];
            lo = pr->offset < lo ? pr->offset : lo;
            hi = pr->offset + pr->numel > hi ? pr->offset + pr->numel : hi;
        }
    *p0 = hi > 0 ? lo : 0, *np = hi > 0 ? hi - lo : 0;
}

int mpt__model_fused_act(const mpt__model_t *m, size_t i, size_t last)
{
    if (i >= last || last >= m->nlayers)
        return 0;
    const mpt__layer_t *l = &m->layers[i], *next = &m->layers[i + 1];
    return l->kind->takes_act && l->nparams > 1 && next->kind->act > 0 ? next->kind->act : 0;
}

int mpt__model_is_fused(const mpt__model_t *m, size_t i, size_t first, size_t last)
{
    return i > first && mpt__model_fused_act(m, i - 1, last) > 0;
}
