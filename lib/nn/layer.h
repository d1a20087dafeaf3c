/*
 * nn/layer.h: layer kinds (one vtable each), layers and models.
 * Never installed.
 *
 * A model is a sequence of layers ending with a loss layer.  Shapes are
 * per sample (the batch dimension is implicit and outermost).  Parameters
 * of all layers live in one flat float buffer (and their gradients in
 * another of the same layout), so that optimizers, norms and, later,
 * collectives run over one buffer.  Parameters are named as PyTorch's
 * nn.Sequential names them: "<layer index>.weight", "<layer index>.bias".
 */
#ifndef MPT_NN_LAYER_H
#define MPT_NN_LAYER_H

#include <stdint.h>

#include "tensor/tensor.h"

#define MPT_LAYER_MAX_PARAMS 12 /* a transformer block's */

typedef struct {
    int ndim; /* 1 (features), 2 (positions, features) or 3 (channels, height, width) */
    size_t d[3];
} mpt__shape_t;

size_t mpt__shape_numel(const mpt__shape_t *s);
/* "[1, 28, 28]" into buf. */
const char *mpt__shape_str(const mpt__shape_t *s, char *buf, size_t size);

/* Axes along which a layer may be split across a tensor-parallel group:
 * engine/shard.c splits by them, the planner checks and costs by them. */
enum {
    MPT_SPLIT_NONE = 0,
    MPT_SPLIT_COLUMN = 1,   /* output features (linear) */
    MPT_SPLIT_ROW = 2,      /* input features (linear) */
    MPT_SPLIT_CHANNELS = 4, /* output channels (conv2d) */
    MPT_SPLIT_ELEMENTWISE = 8, /* any split of its input carries through */
    MPT_SPLIT_INNER = 16      /* split inside, whole input and output: a transformer
                               * block's attention by heads, its MLP by units
                               * (mpt__block_slice) */
};

typedef struct {
    char name[16]; /* "weight", "bias" */
    int ndim;
    size_t dims[4];
    size_t numel;
    size_t fan_in;      /* for the default init bound 1/sqrt(fan_in) */
    float init_value;   /* used when fan_in == 0 and init_std == 0 (layernorm: 1 and 0) */
    float init_std;     /* > 0: normal(0, init_std) instead (GPT-2's init) */
    int shared;         /* another layer also writes its gradient (a tied weight);
                         * whether the owner's backward adds to it or overwrites
                         * is the pass's shared_written */
    int counted_elsewhere; /* a tensor-parallel member's replica of a parameter every
                            * member holds (a layer norm's): left out of its gradient
                            * norm, which member 0's copy enters */
    size_t offset;      /* floats into the flat parameter buffer */
    uint64_t stream;    /* RNG stream of its init: MPT_RNG_STREAM(MPT_RNG_INIT, layer * 16 + slot) */
} mpt__param_t;

typedef struct mpt__layer mpt__layer_t;

/* What one layer's forward or backward works on, for one batch. */
typedef struct {
    size_t batch;
    mpt__tensor_t x, y;    /* input (batch x in), output (batch x out) */
    mpt__tensor_t dy, dx;  /* gradients; dx.buf NULL when nobody needs it */
    mpt__tensor_t params;  /* the flat parameter buffer (offset 0) */
    mpt__tensor_t grads;   /* the flat gradient buffer (offset 0) */
    size_t param_base;     /* model parameter offset of params[0]: a pipeline
                            * stage holds only its layers' parameters */
    mpt__tensor_t saved;   /* this layer's saved_floats (forward -> backward) */
    mpt__tensor_t scratch; /* scratch_floats, shared by all layers */
    int training;
    uint64_t seed, step;   /* dropout masks: MPT_RNG_STREAM(MPT_RNG_DROPOUT, step << 16 | layer) */
    mpt_buffer_t *labels;  /* loss layer: batch x labels_per_sample int32 labels from
                            * element labels_off */
    size_t labels_off;
    float loss_scale;      /* loss layer: gradient scale (1 / labels of the batch) */
    mpt__tensor_t loss_rows; /* loss layer: per-label losses (batch x labels_per_sample) */
    size_t tied_at;        /* a tied layer (lm_head): where the weight it reads sits in
                            * params and grads; SIZE_MAX when the range holds none */
    int shared_written;    /* the owner of a shared parameter: its tied reader ran
                            * first in this range and wrote its gradient (add to it) */
    /* A layer split inside across a tensor-parallel group (MPT_SPLIT_INNER):
     * sums t's first count floats over the group, in place; NULL when the
     * layer runs whole on one device. */
    int (*group_sum)(void *arg, const mpt__tensor_t *t, size_t count);
    void *group_arg;
} mpt__pass_t;

typedef struct {
    const char *name;
    unsigned split_axes;
    int is_loss; /* the last layer: y is unused, loss_rows is written */
    int is_view; /* output is the input reinterpreted (flatten): no kernel runs */
    /* Reads attributes from the layer's JSON object; NULL when it has none. */
    int (*configure)(mpt__layer_t *l, const json_t *spec, const char *where);
    /* Checks l->in, sets l->out, the parameters (shapes, fan_in) and the
     * per-sample saved floats. */
    int (*infer)(mpt__layer_t *l, const char *where);
    /* Scratch floats for a batch (NULL: none). */
    size_t (*scratch_floats)(const mpt__layer_t *l, size_t batch);
    /* Multiply-adds x 2 for a batch, forward or backward. */
    double (*flops)(const mpt__layer_t *l, size_t batch, int backward);
    int (*forward)(mpt__layer_t *l, mpt__pass_t *p);
    /* Writes dx (if dx.buf) and accumulates nothing: parameter gradients
     * are overwritten (one backward per step). */
    int (*backward)(mpt__layer_t *l, mpt__pass_t *p);
} mpt__layer_kind_t;

struct mpt__layer {
    const mpt__layer_kind_t *kind;
    int index;
    mpt__shape_t in, out;
    /* attributes (those the kind uses) */
    size_t units, channels, kernel, stride, padding;
    size_t vocab, heads; /* embedding, block (heads: those this layer computes) */
    size_t head_size, mlp_units; /* block: features per head, MLP width (4 C when whole) */
    float p, eps;
    int nparams;
    mpt__param_t params[MPT_LAYER_MAX_PARAMS];
    size_t saved_per_sample; /* floats kept from forward for backward */
    mpt__param_t tied;       /* lm_head: the embedding's wte it reads (tied_layer) */
    int tied_layer;          /* -1: none */
    void *ctx; /* a tensor-parallel shard's layer: its context (engine/shard.c) */
};

/* Between the kinds' files (layers.c, layers_gpt.c): a positive integer
 * attribute (`def` when absent and def > 0; def (size_t)-1: non-negative,
 * required); a parameter's shape, init and RNG stream in slot `slot`; the
 * transformer kinds by name (NULL if none). */
int mpt__attr_size(const json_t *spec, const char *key, size_t def, const char *where,
                   size_t *out);
void mpt__set_param(mpt__layer_t *l, int slot, const char *name, int ndim, const size_t *dims,
                    size_t fan_in, float init_value);
const mpt__layer_kind_t *mpt__gpt_kind(const char *name);

/* Tensor parallelism inside a transformer block (engine/shard.c): `local`
 * is made a copy of `whole` computing heads [head0, head0 + heads) and MLP
 * units [unit0, unit0 + units), with its own parameter shapes laid out from
 * local_base; run(arg, model element, local element, count) is called for
 * every run of the whole block's parameter elements it holds.  The layer
 * norms and the biases added after the group's sums (proj, fc_proj) are
 * held whole by every member: `member0` 0 marks them counted_elsewhere. */
typedef int (*mpt__run_fn)(void *arg, size_t model, size_t local, size_t count);
int mpt__block_slice(const mpt__layer_t *whole, size_t head0, size_t heads, size_t unit0,
                     size_t units, int member0, size_t local_base, mpt__layer_t *local,
                     mpt__run_fn run, void *arg);

/* The kind called name, NULL if none. */
const mpt__layer_kind_t *mpt__layer_kind(const char *name);
/* "linear, relu, ..." for messages. */
const char *mpt__layer_kind_names(void);

/* A parameter tensor of a pass (view into the flat buffer). */
mpt__tensor_t mpt__param_view(const mpt__pass_t *p, const mpt__param_t *param, int grad);

/* ---- models (model.c) ---------------------------------------------------- */

/* The public mpt_model_t is this struct. */
typedef struct mpt_model {
    char *name;
    char *json;          /* the model description it was read from (checkpoints) */
    mpt__shape_t input;
    size_t nlayers;
    mpt__layer_t *layers;
    size_t param_floats; /* total */
    int classes;         /* outputs of the layer before the loss (its last dimension) */
    size_t labels_per_sample; /* 1, or the positions of a language model's output */
} mpt__model_t;

/* Reads a model description (see docs/model.md); errors name the file, the
 * layer ("layers[3] (linear)") and the reason. */
int mpt__model_from_json(const json_t *root, const char *where, mpt__model_t **out);
int mpt__model_load(const char *path, mpt__model_t **out);
void mpt__model_free(mpt__model_t *m);
/* Initial parameters on the host, counter-based: parameter element j of
 * param q gets uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) from
 * mpt__rng_uniform(seed, q.stream, j) (PyTorch's default for Linear and
 * Conv2d), normal(0, init_std) from mpt__rng_normal when init_std > 0,
 * or init_value when fan_in is 0. */
void mpt__model_init_params(const mpt__model_t *m, uint64_t seed, float *params);
/* The parameter elements of layers first..last: layers lay theirs out in
 * order, so they are one range [*p0, *p0 + *np) (0, 0 without any). */
void mpt__model_param_range(const mpt__model_t *m, size_t first, size_t last, size_t *p0,
                            size_t *np);
/* The largest per-sample activation (floats) over all layer outputs. */
size_t mpt__model_max_activation(const mpt__model_t *m);

#endif
