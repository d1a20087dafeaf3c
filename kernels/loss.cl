/*
 * kernels/loss.cl: fused softmax cross-entropy (loss and logit gradient)
 * and the argmax accuracy count.  Valid OpenCL C 1.2 on its own; launched
 * by lib/tensor/loss.c.
 *
 * One work-item per row, which walks its row in a fixed order: the result
 * does not depend on the device's work-group size, and the class counts of
 * the models here (10 to a few thousand) leave the rows short.  Left out:
 * a work-group-per-row reduction for vocabularies of 50k classes (an
 * optimisation; it would change only the summation order).  Labels are
 * int32, their offset counted in ints.
 */

/* The row's maximum and sum of exp(x - max).  The maximum skips NaN (a
 * comparison with NaN is false) but exp(NaN - max) then makes the sum NaN,
 * so a NaN logit still gives a NaN loss.  Subtracting the maximum keeps
 * every exp() in (0, 1]: logits of 1e4 or -1e4 neither overflow nor lose
 * the whole row to underflow. */
static float row_max(__global const float *row, uint cols)
{
    float m = -INFINITY;
    for (uint c = 0; c < cols; c++)
        m = row[c] > m ? row[c] : m;
    return m;
}

static float row_sum_exp(__global const float *row, uint cols, float m)
{
    float s = 0.0f;
    for (uint c = 0; c < cols; c++)
        s += exp(row[c] - m);
    return s;
}

/* loss[r] = log(sum) + max - x[label], or NaN when the label is outside
 * [0, cols).  Returns the label validity through *ok. */
static float row_loss(__global const float *row, uint cols, int label, float m, float s, int *ok)
{
    *ok = label >= 0 && (uint)label < cols;
    return *ok ? log(s) + m - row[label] : NAN;
}

/* Loss and gradient: dlogits[r, c] = scale * (softmax[c] - (c == label)),
 * NaN for the whole row when its label is out of range (the bad label
 * must be seen, not trained on). */
__kernel void mpt_softmax_xent(__global const float *logits, uint lo, __global const int *labels,
                               uint lbo, __global float *loss, uint losso,
                               __global float *dlogits, uint dlo, uint rows, uint cols,
                               float scale)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *row = logits + lo + (size_t)r * cols;
    __global float *drow = dlogits + dlo + (size_t)r * cols;
    int label = labels[lbo + r], ok;
    float m = row_max(row, cols);
    float s = row_sum_exp(row, cols, m);
    loss[losso + r] = row_loss(row, cols, label, m, s, &ok);
    for (uint c = 0; c < cols; c++) {
        float p = exp(row[c] - m) / s;
        drow[c] = ok ? scale * (p - ((int)c == label ? 1.0f : 0.0f)) : NAN;
    }
}

/* The loss alone, for evaluation (no gradient buffer). */
__kernel void mpt_softmax_xent_loss(__global const float *logits, uint lo,
                                    __global const int *labels, uint lbo, __global float *loss,
                                    uint losso, uint rows, uint cols)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *row = logits + lo + (size_t)r * cols;
    int label = labels[lbo + r], ok;
    float m = row_max(row, cols);
    loss[losso + r] = row_loss(row, cols, label, m, row_sum_exp(row, cols, m), &ok);
}

/* correct[r] = 1 when the first maximum of the row is at its label, else
 * 0.  A row holding a NaN counts as wrong (torch.argmax would pick the
 * NaN; a prediction from NaN logits is no prediction), and so does a label
 * outside [0, cols). */
__kernel void mpt_argmax_correct(__global const float *logits, uint lo,
                                 __global const int *labels, uint lbo, __global float *correct,
                                 uint co, uint rows, uint cols)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *row = logits + lo + (size_t)r * cols;
    int label = labels[lbo + r];
    uint best = 0;
    int has_nan = 0;
    for (uint c = 0; c < cols; c++) {
        has_nan |= isnan(row[c]);
        if (row[c] > row[best]) /* strict: the first maximum wins */
            best = c;
    }
    correct[co + r] = (cols > 0 && !has_nan && label >= 0 && (uint)label == best) ? 1.0f : 0.0f;
}
