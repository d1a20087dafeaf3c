/*
 * nn/layer_desc.h: what a layer kind, a layer and a model *are*, without
 * running them: shapes, parameters, the kinds' descriptive members (name,
 * flags, split axes, FLOPs, kernel launches, saved and scratch floats, a
 * tensor-parallel slice) and models.  Never installed.
 *
 * Free of OpenCL types on purpose: the planner (lib/plan) reasons about
 * models from this header alone and is compiled without the OpenCL
 * headers (Makefile.am: tests/libplan_nocl.la).  What runs a layer on a
 * device (mpt__pass_t with its tensors, the parameter views) is in
 * nn/layer.h, which includes this one.
 *
 * A model is a sequence of layers ending with a loss layer.  Shapes are
 * per sample (the batch dimension is implicit and outermost).  Parameters
 * of all layers live in one flat float buffer (and their gradients in
 * another of the same layout), so that optimizers, norms and collectives
 * run over one buffer.  Parameters are named as PyTorch's nn.Sequential
 * names them: "<layer index>.weight", "<layer index>.bias".
 */
#ifndef MPT_NN_LAYER_DESC_H
#define MPT_NN_LAYER_DESC_H

#include <stdint.h>

#include "core/internal.h"

#define MPT_LAYER_MAX_PARAMS 12 /* a transformer block's */

typedef struct {
    int ndim; /* 1 (features), 2 (positions, features) or 3 (channels, height, width) */
    size_t d[3];
} mpt__shape_t;

size_t mpt__shape_numel(const mpt__shape_t *s);
/* "[1, 28, 28]" into buf. */
const char *mpt__shape_str(const mpt__shape_t *s, char *buf, size_t size);

/* Axes along which a layer may be split across a tensor-parallel group:
 * plan/split.c gives each layer of a stage its role by them once
 * (mpt__plan_roles), engine/shard.c cuts by those roles. */
enum {
    MPT_SPLIT_NONE = 0,
    MPT_SPLIT_COLUMN = 1,   /* output features (linear) */
    MPT_SPLIT_ROW = 2,      /* input features (linear) */
    MPT_SPLIT_CHANNELS = 4, /* output channels (conv2d) */
    MPT_SPLIT_ELEMENTWISE = 8, /* any split of its input carries through */
    MPT_SPLIT_INNER = 16      /* split inside, whole input and output: a transformer
                               * block's attention by heads, its MLP by units
                               * (the kind's inner_units and slice) */
};

/* What a kind's layers need of the schedule and of each other; modules
 * outside lib/nn read these instead of comparing kind names. */
enum {
    /* Owns a weight (its first parameter) that a later TIED_READER reads
     * (GPT-2's embedding). */
    MPT_KIND_TIED_OWNER = 4,
    /* Has no weight of its own: reads the first parameter of the nearest
     * TIED_OWNER before it (GPT-2's lm_head). */
    MPT_KIND_TIED_READER = 8
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
/* What one pass works on (tensors on a device): nn/layer.h. */
typedef struct mpt__pass mpt__pass_t;

/* A layer split inside (MPT_SPLIT_INNER) splits MPT_INNER_PARTS unit
 * counts by the group's fractions (a block: its heads, its MLP units). */
#define MPT_INNER_PARTS 2

/* Called for every run of `count` parameter elements a slice holds:
 * element `model` of the model's flat layout is element `local` of the
 * slice's. */
typedef int (*mpt__run_fn)(void *arg, size_t model, size_t local, size_t count);

/* A kind: filled with designated initialisers, listed once in the
 * registry at the end of nn/layers.c.  Members marked (optional) may be
 * NULL or 0. */
typedef struct {
    const char *name;
    unsigned flags;      /* MPT_KIND_* (optional) */
    unsigned split_axes; /* MPT_SPLIT_* (optional: NONE) */
    int is_loss;         /* the last layer: y is unused, loss_rows is written */
    int is_view;         /* output is the input reinterpreted (flatten): no kernel runs */
    /* (optional) An elementwise activation that a layer of a takes_act kind
     * just before it may run inside its own passes: its code (mpt__act_t of
     * tensor/tensor.h, > 0). */
    int act;
    /* (optional) Runs the activation after it when the stage holds both
     * (mpt__model_fused_act): its forward and backward honour the pass's
     * act; launches_fused_* are then its launches, the activation's none. */
    int takes_act;
    int launches_fused_fwd, launches_fused_bwd;
    /* Kernel launches per micro-batch, forward and backward, as forward
     * and backward issue them (a CLBlast routine counted as one): the
     * cost model's launch term (plan/cost.c).  A view launches none. */
    int launches_fwd, launches_bwd;
    /* Reads attributes from the layer's JSON object (optional). */
    int (*configure)(mpt__layer_t *l, const json_t *spec, const char *where);
    /* Checks l->in, sets l->out, the parameters (shapes, fan_in) and the
     * per-sample saved floats. */
    int (*infer)(mpt__layer_t *l, const char *where);
    /* Scratch floats for a batch (optional: none). */
    size_t (*scratch_floats)(const mpt__layer_t *l, size_t batch);
    /* Multiply-adds x 2 for a batch, forward or backward. */
    double (*flops)(const mpt__layer_t *l, size_t batch, int backward);
    /* (optional, MPT_SPLIT_INNER) The unit counts a tensor-parallel group
     * splits, each at least one per member. */
    void (*inner_units)(const mpt__layer_t *l, size_t units[MPT_INNER_PARTS]);
    /* (optional, MPT_SPLIT_INNER) `local` is made a copy of `whole`
     * computing units [first[k], first[k] + count[k]) of each part, with
     * its own parameter shapes laid out from local_base; run(arg, ...) is
     * called for every run of the whole layer's parameter elements it
     * holds.  Parameters every member holds whole are marked
     * counted_elsewhere unless `member0`. */
    int (*slice)(const mpt__layer_t *whole, const size_t first[MPT_INNER_PARTS],
                 const size_t count[MPT_INNER_PARTS], int member0, size_t local_base,
                 mpt__layer_t *local, mpt__run_fn run, void *arg);
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
    int first_computing;     /* only views before it: nobody wants its input's
                              * gradient, so its backward computes none (FLOPs) */
    mpt__param_t tied;       /* a TIED_READER: the owner's weight it reads (tied_layer) */
    int tied_layer;          /* -1: none */
    void *ctx; /* a tensor-parallel shard's layer: its context (engine/shard.c) */
};

/* Between the kinds' files (layers.c, layers_gpt.c): a positive integer
 * attribute (`def` when absent and def > 0; def (size_t)-1: non-negative,
 * required); a parameter's shape, init and RNG stream in slot `slot`. */
int mpt__attr_size(const json_t *spec, const char *key, size_t def, const char *where,
                   size_t *out);
void mpt__set_param(mpt__layer_t *l, int slot, const char *name, int ndim, const size_t *dims,
                    size_t fan_in, float init_value);

/* The GPT kinds (layers_gpt.c), for the registry in layers.c. */
extern const mpt__layer_kind_t mpt__kind_embedding, mpt__kind_block, mpt__kind_lm_head;

/* The kind called name, NULL if none. */
const mpt__layer_kind_t *mpt__layer_kind(const char *name);
/* The i-th kind of the registry, NULL past the last. */
const mpt__layer_kind_t *mpt__layer_kind_at(size_t i);
/* "linear, relu, ..." (every kind's name) into buf, truncated to size. */
const char *mpt__layer_kind_names(char *buf, size_t size);

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
/* The activation code (> 0) that layer i runs for layer i + 1 when both
 * are in a range ending at layer `last`: i's kind takes activations, its
 * layer has a bias (a row-parallel shard has none) and i + 1 is an
 * activation kind; 0 otherwise.  The one rule for every module that
 * fuses (the executor) or counts launches (the cost model). */
int mpt__model_fused_act(const mpt__model_t *m, size_t i, size_t last);
/* Whether layer i is the activation that layer i - 1 runs (above). */
int mpt__model_is_fused(const mpt__model_t *m, size_t i, size_t first, size_t last);
/* The largest per-sample activation (floats) over all layer outputs. */
size_t mpt__model_max_activation(const mpt__model_t *m);

#endif
