/*
 * bin/sample.h: text from a trained language model (sample.c).
 */
#ifndef MPT_SAMPLE_H
#define MPT_SAMPLE_H

#include <stdio.h>

#include "tool.h"

/* Writes `count` tokens continuing `prompt` (its bytes are its tokens) to
 * out: each drawn from the softmax of the last position's logits divided
 * by `temperature`, among the `top_k` likeliest (0: all), with a
 * generator seeded by `seed`.  Tokens of a byte vocabulary are written as
 * bytes, others as their ids.  Exits with a message on failure. */
void sample_text(mpt_trainer_t *trainer, const mpt_model_t *model, uint64_t count,
                 const char *prompt, double temperature, uint64_t top_k, uint64_t seed,
                 FILE *out);

#endif
