/*
 * engine/shard.h: tensor parallelism.  A pipeline stage run by a group of
 * tp devices gives each member a *shard model*: the stage's layers with
 * the member's slice of every split layer (local shapes, its own compact
 * parameter buffer) and the communication the split needs, so that the
 * executor runs it like any other layer range.  Never installed.
 *
 * Splits follow each layer's role (plan/plan.h mpt__tp_roles_t, from its
 * kind's split axes and flags by mpt__tp_walk), walking the stage
 * with the activation either whole on every member or cut into per-member
 * slices of its first dimension (features, or channels of an image):
 *
 *   linear, whole input     column-parallel: the member's output units;
 *                           backward all-reduces the input gradient
 *   linear, sliced input    row-parallel: the member's input features;
 *                           forward all-reduces the output (the bias is
 *                           added by member 0 only)
 *   conv2d                  split over output channels, as column-parallel
 *                           (a sliced input is gathered first)
 *   block                   split inside (its kind's inner_units and slice): the
 *                           member's heads and MLP units, whole input and
 *                           output; the block's own passes all-reduce after
 *                           proj and fc_proj forward, before the layer
 *                           norms backward (two Megatron pairs)
 *   relu, gelu, maxpool2d,  run on the member's slice, told where it sits
 *   flatten, dropout        in a whole sample (mpt__pass_t.slice_first), so
 *                           that dropout draws the whole activation's mask
 *   anything else           the whole activation, replicated with its
 *   (layernorm, embedding,  parameters if any: every member computes the
 *   lm_head, the loss)      same gradient; member 0's copy alone enters
 *                           the gradient norm (counted_elsewhere); a tied
 *                           head reads its member's copy of the embedding,
 *                           which must be in the stage
 *
 * so that linear, relu, linear is Megatron's pairing (one all-reduce each
 * way), a slice that reaches a layer needing the whole activation is
 * all-gathered, and a stage always ends whole.
 *
 * Slices of n units over fractions f: mpt__tp_split (plan/plan.h: largest
 * remainder, exact, every member at least one unit).  Each member holds
 * elements of the model's parameters (disjoint but for replicated layers),
 * listed as pieces (runs of elements)
 * mapping its compact buffer to the model's flat layout: initial values,
 * checkpoints and reads of the whole model go through them, so shards
 * start from exactly the one-device values and checkpoints stay
 * plan-independent.
 */
#ifndef MPT_ENGINE_SHARD_H
#define MPT_ENGINE_SHARD_H

#include "comm/comm.h"
#include "nn/layer.h"
#include "plan/plan.h"
#include "trace/chrome.h"

/* A run of `count` parameter elements: model elements from `model`, the
 * member's compact buffer from `local`. */
typedef struct {
    size_t model, local, count;
} mpt__piece_t;

typedef struct mpt__shard mpt__shard_t;

/* Member `rank` of a group of tp devices running layers [first, last] of
 * m with `fractions` (tp of them) and the layers' `roles` (the plan
 * stage's, recorded by mpt__plan_roles; required: the shard never
 * derives them itself).  `group`
 * (copied; its transport must outlive the shard) is the group's collective context, the member's
 * position its self; `max_batch` sizes the host buffers of the
 * all-gathers.  Errors name the layer and the reason a split is
 * impossible. */
int mpt__shard_create(const mpt__model_t *m, size_t first, size_t last,
                      const mpt__tp_roles_t *roles, const double *fractions, size_t tp,
                      size_t rank, const mpt__group_t *group, size_t max_batch,
                      mpt__shard_t **out);
void mpt__shard_free(mpt__shard_t *s);

/* The member's layers as a model (run all of its layers: 0 .. nlayers-1). */
const mpt__model_t *mpt__shard_model(const mpt__shard_t *s);
const mpt__piece_t *mpt__shard_pieces(const mpt__shard_t *s, size_t *npieces);
/* local[piece.local ...] = model_array[piece.model ...] for every piece,
 * and the reverse. */
void mpt__shard_gather(const mpt__shard_t *s, const float *model_array, float *local);
void mpt__shard_scatter(const mpt__shard_t *s, const float *local, float *model_array);
/* Whether two members hold the same elements in the same places (data
 * parallelism all-reduces their compact buffers as they are). */
int mpt__shard_same_layout(const mpt__shard_t *a, const mpt__shard_t *b);
/* Seconds and bytes of the member's collectives since the last call (then
 * reset). */
void mpt__shard_take_comm(mpt__shard_t *s, double *seconds, size_t *bytes);
/* Records each collective as a span ("tp-allreduce", "tp-allgather") in
 * spans from now on; NULL stops. */
void mpt__shard_set_spans(mpt__shard_t *s, mpt__spans_t *spans);

#endif
