/*
 * nn/layer.h: running layers on a device: what one forward or backward
 * pass works on (mpt__pass_t, tensors in device buffers) and the
 * parameter views into the flat buffers.  Never installed.
 *
 * What kinds, layers and models are (shapes, parameters, the kinds'
 * descriptive members) is nn/layer_desc.h, free of OpenCL types, which
 * the planner includes instead of this header.
 */
#ifndef MPT_NN_LAYER_H
#define MPT_NN_LAYER_H

#include "nn/layer_desc.h"
#include "tensor/tensor.h"

/* What one layer's forward or backward works on, for one batch. */
struct mpt__pass {
    size_t batch;
    mpt__tensor_t x, y;    /* input (batch x in), output (batch x out) */
    mpt__tensor_t dy, dx;  /* gradients; dx.buf NULL when nobody needs it */
    mpt__tensor_t params;  /* the flat parameter buffer (offset 0) */
    mpt__tensor_t grads;   /* the flat gradient buffer (offset 0) */
    size_t param_base;     /* model parameter offset of params[0]: a pipeline
                            * stage holds only its layers' parameters */
    size_t grad_base;      /* model parameter offset of grads[0]: param_base, or under
                            * ZeRO-2 where the layer's gradients go in the window
                            * (engine/executor.c) */
    mpt__tensor_t saved;   /* this layer's saved_floats (forward -> backward) */
    mpt__tensor_t scratch; /* scratch_floats, shared by all layers */
    int training;
    uint64_t seed, step;   /* dropout masks: MPT_RNG_STREAM(MPT_RNG_DROPOUT, step << 16 | layer) */
    /* Where this pass's elements sit in the step's whole activation, so
     * that dropout draws the one-device mask (tensor/tensor.h
     * mpt__dropout_at_t): its first sample's index in the step's batch (a
     * replica's share and a micro-batch start later), and, on a
     * tensor-parallel slice, the slice's first element within a whole
     * sample and the whole sample's elements (slice_whole 0: not sliced). */
    size_t sample_first;
    size_t slice_first, slice_whole;
    mpt_buffer_t *labels;  /* loss layer: batch x labels_per_sample int32 labels from
                            * element labels_off */
    size_t labels_off;
    float loss_scale;      /* loss layer: gradient scale (1 / labels of the batch) */
    mpt__tensor_t loss_rows; /* loss layer: per-label losses (batch x labels_per_sample) */
    size_t tied_at;        /* a tied layer (lm_head): where the weight it reads sits in
                            * params and grads; SIZE_MAX when the range holds none */
    int shared_written;    /* the owner of a shared parameter: its tied reader ran
                            * first in this range and wrote its gradient (add to it) */
    /* A layer that runs the activation after it (mpt__model_fused_act):
     * that activation's code (mpt__act_t; 0: none), and its output, which
     * the forward writes after keeping y (the pre-activation) for the
     * backward; dy is then the gradient of `a`, and the backward may
     * overwrite it.  The activation layer itself is skipped. */
    int act;
    mpt__tensor_t a;
    /* A layer split inside across a tensor-parallel group (MPT_SPLIT_INNER):
     * sums t's first count floats over the group, in place; NULL when the
     * layer runs whole on one device. */
    int (*group_sum)(void *arg, const mpt__tensor_t *t, size_t count);
    void *group_arg;
};

/* A parameter tensor of a pass (view into the flat buffer). */
mpt__tensor_t mpt__param_view(const mpt__pass_t *p, const mpt__param_t *param, int grad);

#endif
