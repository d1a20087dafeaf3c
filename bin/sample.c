/*
 * bin/sample.c: autoregressive sampling for mpt-train --sample.
 *
 * Each token costs one forward pass of the whole context (the model has
 * no key/value cache): the window holds the last `context` tokens, the
 * positions after the last real one are padded with token 0, which the
 * causal attention keeps from reaching back.  Fine for the few hundred
 * tokens of a sample; a cache would be the first step to real inference.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"

/* splitmix64: a tool-side generator; the library's counter-based one is
 * for what must be reproducible across devices and plans. */
static double uniform(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* The k-th largest value of row (k >= 1), by partial selection. */
static float kth_largest(const float *row, size_t n, size_t k, float *scratch)
{
    memcpy(scratch, row, n * sizeof *scratch);
    for (size_t i = 0; i < k; i++) {
        size_t best = i;
        for (size_t j = i + 1; j < n; j++)
            if (scratch[j] > scratch[best])
                best = j;
        float t = scratch[i];
        scratch[i] = scratch[best], scratch[best] = t;
    }
    return scratch[k - 1];
}

static size_t draw(const float *logits, size_t vocab, double temperature, uint64_t top_k,
                   uint64_t *state, float *scratch, double *p)
{
    float floor_ = top_k && top_k < vocab ? kth_largest(logits, vocab, top_k, scratch) : -INFINITY;
    double most = -INFINITY, sum = 0;
    for (size_t v = 0; v < vocab; v++)
        most = logits[v] > most ? logits[v] : most;
    for (size_t v = 0; v < vocab; v++) {
        p[v] = logits[v] >= floor_ ? exp((logits[v] - most) / temperature) : 0;
        sum += p[v];
    }
    double u = uniform(state) * sum;
    for (size_t v = 0; v < vocab; v++) {
        if (u < p[v])
            return v;
        u -= p[v];
    }
    return vocab - 1; /* rounding at the very end of the range */
}

void sample_text(mpt_trainer_t *trainer, const mpt_model_t *model, uint64_t count,
                 const char *prompt, double temperature, uint64_t top_k, uint64_t seed,
                 FILE *out)
{
    size_t T = mpt_model_labels_per_sample(model), V = (size_t)mpt_model_classes(model);
    size_t plen = strlen(prompt), cap = plen + count + 1, len = 0;
    size_t *tokens = malloc(cap * sizeof *tokens);
    float *x = calloc(T, sizeof *x), *logits = malloc(T * V * sizeof *logits);
    float *scratch = malloc(V * sizeof *scratch);
    double *p = malloc(V * sizeof *p);
    uint64_t state = seed ^ 0x5DEECE66Dull;
    if (!tokens || !x || !logits || !scratch || !p)
        tool_die("out of memory for sampling");
    for (size_t i = 0; i < plen; i++) {
        size_t id = (unsigned char)prompt[i];
        if (id >= V)
            tool_die("--prompt: byte %zu (%zu) is beyond the model's vocabulary of %zu", i, id, V);
        tokens[len++] = id;
    }
    if (len == 0)
        tokens[len++] = 0;
    fputs(V <= 256 ? prompt : "", out);
    for (uint64_t n = 0; n < count; n++) {
        size_t w = len < T ? len : T, start = len - w;
        for (size_t i = 0; i < T; i++)
            x[i] = i < w ? (float)tokens[start + i] : 0.0f;
        tool_check(mpt_trainer_logits(trainer, x, 1, logits), "sampling");
        for (size_t v = 0; v < V; v++) /* a diverged model: no text from noise */
            if (!isfinite(logits[(w - 1) * V + v]))
                tool_die("sampling: logit %zu of token %" PRIu64 " is %g: the model's "
                         "parameters are not finite", v, n, (double)logits[(w - 1) * V + v]);
        size_t next = draw(logits + (w - 1) * V, V, temperature, top_k, &state, scratch, p);
        tokens[len++] = next;
        if (V <= 256)
            fputc((int)next, out);
        else
            fprintf(out, "%zu ", next);
    }
    fputc('\n', out);
    fflush(out);
    free(tokens);
    free(x);
    free(logits);
    free(scratch);
    free(p);
}
