/*
 * train/model_api.c: the public model API (mpt.h "Models") over nn/model.c:
 * loading from a file or a string, the builder, the accessors and the
 * layer table.  The layer kinds and the parser live in lib/nn; this file
 * only wraps them as opaque handles, and the builder writes JSON for that
 * parser rather than rules of its own.
 */
#include <math.h>
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

/* ---- models from text and from the builder ------------------------------------ */

int mpt_model_from_json(const char *text, mpt_model_t **out)
{
    json_error_t err;
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_from_json: NULL argument");
    *out = NULL;
    if (!text)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_from_json: no text");
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return mpt__fail(MPT_ERR_PARSE, "model text:%d:%d: malformed JSON: %s", err.line,
                         err.column, err.text);
    int status = mpt__model_from_json(root, "model text", out);
    json_decref(root);
    return status;
}

/* The builder writes the same JSON a file would hold and hands it to the
 * same parser at build time, so that kinds, attributes and shapes have one
 * set of rules and one set of messages (naming layers[i]). */
struct mpt_model_builder {
    json_t *root;   /* {"name", "input", "layers"} */
    json_t *layers; /* borrowed from root */
};

int mpt_model_builder_new(const char *name, size_t ndims, const size_t *dims,
                          mpt_model_builder_t **out)
{
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_builder_new: NULL argument");
    *out = NULL;
    if (!dims || ndims == 0)
        return mpt__fail(MPT_ERR_INVALID, "model builder: the input shape needs at least one "
                         "dimension ([features] or [channels, height, width])");
    mpt_model_builder_t *b = calloc(1, sizeof *b);
    json_t *input = json_array();
    if (b && input && (b->root = json_object()) && (b->layers = json_array())) {
        for (size_t i = 0; i < ndims; i++)
            json_array_append_new(input, json_integer((json_int_t)dims[i]));
        json_object_set_new(b->root, "name", json_string(name && *name ? name : "model"));
        json_object_set_new(b->root, "input", input);
        json_object_set_new(b->root, "layers", b->layers);
        if (json_array_size(input) == ndims && json_object_size(b->root) == 3) {
            *out = b;
            return MPT_OK;
        }
        input = NULL; /* now root's */
    }
    json_decref(input);
    mpt_model_builder_free(b);
    return mpt__fail(MPT_ERR_NOMEM, "out of memory");
}

void mpt_model_builder_free(mpt_model_builder_t *b)
{
    if (!b)
        return;
    json_decref(b->root);
    free(b);
}

/* One "key=value" of a layer's attributes: an integer when the value reads
 * as one (units, kernel...), a real otherwise (p, eps), as JSON would hold
 * them. */
static int parse_attr(const char *item, size_t len, const char *at, json_t *layer)
{
    char key[64], value[64], *end;
    const char *eq = memchr(item, '=', len);
    size_t klen = eq ? (size_t)(eq - item) : 0, vlen = eq ? len - klen - 1 : 0;
    if (!eq || klen == 0 || klen >= sizeof key || vlen == 0 || vlen >= sizeof value)
        return mpt__fail(MPT_ERR_INVALID, "%s: attribute \"%.*s\" is not key=number", at,
                         (int)len, item);
    memcpy(key, item, klen), key[klen] = '\0';
    memcpy(value, eq + 1, vlen), value[vlen] = '\0';
    if (!strcmp(key, "kind") || json_object_get(layer, key))
        return mpt__fail(MPT_ERR_INVALID, "%s: attribute \"%s\" given twice", at, key);
    long long i = strtoll(value, &end, 10);
    json_t *v = NULL;
    if (*end == '\0') {
        v = json_integer((json_int_t)i);
    } else {
        double d = strtod(value, &end);
        if (*end != '\0' || !isfinite(d))
            return mpt__fail(MPT_ERR_INVALID, "%s: attribute %s=%s is not a number", at, key,
                             value);
        v = json_real(d);
    }
    if (!v || json_object_set_new(layer, key, v) != 0)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    return MPT_OK;
}

int mpt_model_builder_add(mpt_model_builder_t *b, const char *kind, const char *attrs)
{
    char at[128];
    if (!b || !kind || !*kind)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_builder_add: no builder or no kind");
    snprintf(at, sizeof at, "model builder: layers[%zu] (%s)", json_array_size(b->layers),
             kind);
    json_t *layer = json_object();
    int status = MPT_OK;
    if (!layer || json_object_set_new(layer, "kind", json_string(kind)) != 0) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (const char *p = attrs ? attrs : ""; *p;) {
        size_t len = strcspn(p, " ,\t");
        if (len > 0)
            MPT_TRY(parse_attr(p, len, at, layer));
        p += len;
        p += strspn(p, " ,\t");
    }
    if (json_array_append(b->layers, layer) != 0)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
out:
    json_decref(layer);
    return status;
}

int mpt_model_builder_build(const mpt_model_builder_t *b, mpt_model_t **out)
{
    if (!b || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_builder_build: NULL argument");
    return mpt__model_from_json(b->root, "model builder", out);
}

int mpt_model_to_json(const mpt_model_t *model, char **text)
{
    if (!model || !text)
        return mpt__fail(MPT_ERR_INVALID, "mpt_model_to_json: NULL argument");
    if (!(*text = mpt__strdup(model->json)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    return MPT_OK;
}
