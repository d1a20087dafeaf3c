/*
 * train/checkpoint.c: trainer checkpoints as safetensors.
 *
 * Tensors: every parameter as "<layer>.<name>" with its shape (the names
 * PyTorch's nn.Sequential gives), then the optimizer slots as
 * "optimizer.<slot>.<layer>.<name>" (slot 0: SGD momentum or Adam m; slot
 * 1: Adam v).  Metadata (strings): format, model (its JSON), config (the
 * whole training configuration as JSON: optimizer, seed, batch, schedule
 * and every hyper-parameter), step, epoch, batch_index, data (its
 * identity), skipped_steps (non-finite steps that applied no update: the
 * optimizer's update count is step less these) and crc32: a CRC-32
 * of the other metadata and of all tensor data in file order, which
 * catches corruption the format itself cannot.  The RNG state is the seed
 * and the step: every random number mpt draws is a function of them.
 * Whole tensors are written, so a checkpoint does not depend on how a
 * later plan shards them.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/safetensors.h"
#include "train/trainer.h"

#define CHECKPOINT_FORMAT "mpt-checkpoint/1"

static const char *const optimizer_names[] = {"sgd", "adamw"};

static void tensor_name(char *buf, size_t size, int slot, const mpt__layer_t *l,
                        const mpt__param_t *p)
{
    if (slot < 0)
        snprintf(buf, size, "%d.%s", l->index, p->name);
    else
        snprintf(buf, size, "optimizer.%d.%d.%s", slot, l->index, p->name);
}

/* Calls fn for every (slot, layer, param) in file order: slot -1 is the
 * parameters themselves. */
typedef int (*visit_fn)(void *ctx, int slot, const mpt__layer_t *l, const mpt__param_t *p);

static int visit(const mpt__model_t *m, visit_fn fn, void *ctx)
{
    for (int slot = -1; slot < 2; slot++)
        for (size_t i = 0; i < m->nlayers; i++)
            for (int q = 0; q < m->layers[i].nparams; q++) {
                int status = fn(ctx, slot, &m->layers[i], &m->layers[i].params[q]);
                if (status < 0)
                    return status;
            }
    return MPT_OK;
}

typedef struct {
    mpt__st_file_t *file;      /* writing */
    const mpt__st_file_t *in;  /* reading */
    const char *path;
    float *state[3];           /* params, slot 0, slot 1 (host copies) */
    uLong crc;
} ckpt_ctx;

static int add_tensor(void *p, int slot, const mpt__layer_t *l, const mpt__param_t *q)
{
    ckpt_ctx *c = p;
    char name[128];
    const float *data = c->state[slot + 1] + q->offset;
    tensor_name(name, sizeof name, slot, l, q);
    c->crc = crc32(c->crc, (const Bytef *)data, (uInt)(q->numel * sizeof(float)));
    return mpt__st_add(c->file, name, MPT_ST_F32, q->ndim, q->dims, data);
}

static int take_tensor(void *p, int slot, const mpt__layer_t *l, const mpt__param_t *q)
{
    ckpt_ctx *c = p;
    char name[128];
    tensor_name(name, sizeof name, slot, l, q);
    const mpt__st_tensor_t *t = mpt__st_get(c->in, name);
    if (!t)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: tensor %s is missing", c->path, name);
    int same = t->dtype == MPT_ST_F32 && t->ndim == q->ndim;
    for (int d = 0; same && d < q->ndim; d++)
        same = t->shape[d] == q->dims[d];
    if (!same)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: tensor %s has another dtype or shape than "
                         "the model's", c->path, name);
    memcpy(c->state[slot + 1] + q->offset, t->data, t->bytes);
    return MPT_OK;
}

static int alloc_state(const mpt_trainer_t *t, ckpt_ctx *c)
{
    size_t n = t->model->param_floats ? t->model->param_floats : 1;
    for (int s = 0; s < 3; s++)
        if (!(c->state[s] = malloc(n * sizeof(float))))
            return mpt__fail(MPT_ERR_NOMEM, "out of memory for a checkpoint");
    return MPT_OK;
}

static void free_state(ckpt_ctx *c)
{
    for (int s = 0; s < 3; s++)
        free(c->state[s]);
}

static int meta_u64(mpt__st_file_t *f, const char *key, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return mpt__st_set_meta(f, key, buf);
}

/* The configuration as compact JSON with every double exact.  The cosine
 * schedule's length belongs to it (the rate depends on it); a constant
 * schedule has none, so such a run may be resumed for more steps. */
char *mpt__train_config_json(const mpt_train_config_t *c)
{
    json_t *o = json_pack("{s:I,s:I,s:s,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:s}", "batch",
                          (json_int_t)c->batch, "seed", (json_int_t)c->seed, "optimizer",
                          optimizer_names[c->optimizer], "lr", c->lr, "momentum", c->momentum,
                          "weight_decay", c->weight_decay, "beta1", c->beta1, "beta2", c->beta2,
                          "eps", c->eps, "clip_norm", c->clip_norm, "schedule",
                          c->schedule == MPT_SCHEDULE_COSINE ? "cosine" : "constant");
    if (o && c->schedule == MPT_SCHEDULE_COSINE) {
        json_object_set_new(o, "warmup_steps", json_integer((json_int_t)c->warmup_steps));
        json_object_set_new(o, "total_steps", json_integer((json_int_t)c->total_steps));
        json_object_set_new(o, "min_lr", json_real(c->min_lr));
    }
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return text;
}

/* The metadata the checksum covers, in this order, before the tensors. */
static const char *const covered[] = {"format", "model", "optimizer", "config",
                                      "step", "epoch", "batch_index"};

static uLong crc_meta(const mpt__st_file_t *f)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    /* "data", the data's identity, and "skipped_steps" came later:
     * covered when present, so that checkpoints written before them still
     * check. */
    static const char *const later[] = {"data", "skipped_steps"};
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++) {
        const char *v = mpt__st_meta(f, later[i]);
        if (!v)
            continue;
        crc = crc32(crc, (const Bytef *)later[i], (uInt)strlen(later[i]));
        crc = crc32(crc, (const Bytef *)"=", 1);
        crc = crc32(crc, (const Bytef *)v, (uInt)strlen(v));
    }
    for (size_t i = 0; i < sizeof covered / sizeof covered[0]; i++) {
        const char *v = mpt__st_meta(f, covered[i]);
        crc = crc32(crc, (const Bytef *)covered[i], (uInt)strlen(covered[i]));
        crc = crc32(crc, (const Bytef *)"=", 1);
        if (v)
            crc = crc32(crc, (const Bytef *)v, (uInt)strlen(v));
        crc = crc32(crc, (const Bytef *)"\n", 1);
    }
    return crc;
}

/* The non-finite values among n floats, and the first one's index. */
static size_t count_nonfinite(const float *v, size_t n, size_t *first)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) && bad++ == 0)
            *first = i;
    return bad;
}

/* A diverged run's state (NaN or infinite parameters or optimizer slots)
 * is never written, and never read back: it would replace or continue
 * from the last good one. */
static int check_finite(const mpt_trainer_t *t, float *const state[3], const char *path,
                        const char *what, int allow)
{
    static const char *const names[3] = {"parameters", "optimizer slot 0", "optimizer slot 1"};
    for (int s = 0; s < 3; s++) {
        size_t first = 0, bad = count_nonfinite(state[s], t->model->param_floats, &first);
        if (bad && allow) /* to inspect a diverged state: said, not hidden */
            mpt__log(MPT_LOG_WARN,
                     "checkpoint %s: %zu of the %zu %s are not finite (the first: float %zu "
                     "is %g): loaded anyway, as allowed", path, bad, t->model->param_floats,
                     names[s], first, (double)state[s][first]);
        else if (bad)
            return mpt__fail(MPT_ERR_INVALID,
                             "checkpoint %s: %zu of the %zu %s are not finite (the first: "
                             "float %zu is %g): training diverged; %s",
                             path, bad, t->model->param_floats, names[s], first,
                             (double)state[s][first], what);
    }
    return MPT_OK;
}

/* The checksum over the metadata and every tensor's data in file order
 * (the writer's order): checked before anything in the file is believed,
 * so that a flipped byte is called corruption, not another model. */
static int check_crc(const mpt__st_file_t *f, const char *path)
{
    char crc[16];
    uLong sum = crc_meta(f);
    const char *recorded = mpt__st_meta(f, "crc32");
    for (size_t i = 0; i < mpt__st_count(f); i++) {
        const mpt__st_tensor_t *t = mpt__st_at(f, i);
        sum = crc32(sum, (const Bytef *)t->data, (uInt)t->bytes);
    }
    snprintf(crc, sizeof crc, "%08lx", (unsigned long)sum);
    if (!recorded || strcmp(crc, recorded) != 0)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: data checksum %s does not match the "
                         "recorded %s: the file is corrupted or was edited", path, crc,
                         recorded ? recorded : "(none)");
    return MPT_OK;
}

int mpt_trainer_save(mpt_trainer_t *t, const char *path, const mpt_data_position_t *pos)
{
    ckpt_ctx c = {0};
    char crc[16], *config = mpt__train_config_json(&t->cfg);
    int status;
    if (!config)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    MPT_TRY(alloc_state(t, &c));
    MPT_TRY(mpt__trainer_read_params(t, c.state[0]));
    MPT_TRY(mpt__trainer_read_slot(t, 0, c.state[1]));
    MPT_TRY(mpt__trainer_read_slot(t, 1, c.state[2]));
    if (t->rank != 0) /* the reads were collective; rank 0 alone writes the file */
        goto out;
    MPT_TRY(check_finite(t, c.state, path, "not written, the previous checkpoint is kept", 0));
    MPT_TRY(mpt__st_create(&c.file));
    MPT_TRY(mpt__st_set_meta(c.file, "format", CHECKPOINT_FORMAT));
    MPT_TRY(mpt__st_set_meta(c.file, "model", t->model->json));
    MPT_TRY(mpt__st_set_meta(c.file, "optimizer", optimizer_names[t->cfg.optimizer]));
    MPT_TRY(mpt__st_set_meta(c.file, "config", config));
    MPT_TRY(meta_u64(c.file, "step", mpt_trainer_steps(t)));
    MPT_TRY(meta_u64(c.file, "epoch", pos ? pos->epoch : 0));
    MPT_TRY(meta_u64(c.file, "batch_index", pos ? pos->batch_index : 0));
    if (t->data_id[0])
        MPT_TRY(mpt__st_set_meta(c.file, "data", t->data_id));
    /* Only when some were: files stay as older readers check them.
     * Without an engine the state is the snapshot's, and so is the count. */
    uint64_t skipped = t->eng ? t->skipped : t->snap.skipped;
    if (skipped)
        MPT_TRY(meta_u64(c.file, "skipped_steps", skipped));
    c.crc = crc_meta(c.file);
    MPT_TRY(visit(t->model, add_tensor, &c));
    snprintf(crc, sizeof crc, "%08lx", (unsigned long)c.crc);
    MPT_TRY(mpt__st_set_meta(c.file, "crc32", crc));
    MPT_TRY(mpt__st_write(c.file, path));
out:
    free(config);
    mpt__st_free(c.file);
    free_state(&c);
    return status;
}

static int meta_number(const mpt__st_file_t *f, const char *path, const char *key, uint64_t *out)
{
    const char *v = mpt__st_meta(f, key);
    char *end = NULL;
    if (!v || !*v)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: metadata \"%s\" is missing", path, key);
    *out = strtoull(v, &end, 10);
    if (*end)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: metadata \"%s\" = '%s' is not a number",
                         path, key, v);
    return MPT_OK;
}

/* The checkpoint must be of this model and of the run this trainer
 * continues: the same configuration, or the data order, the dropout masks
 * and the schedule would differ from the uninterrupted run's. */
static int check_compatible(const mpt_trainer_t *t, const mpt__st_file_t *f, const char *path)
{
    const char *format = mpt__st_meta(f, "format"), *model = mpt__st_meta(f, "model");
    const char *saved = mpt__st_meta(f, "config");
    int status = MPT_OK;
    if (!format || strcmp(format, CHECKPOINT_FORMAT) != 0)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: not an mpt checkpoint (format '%s')",
                         path, format ? format : "");
    if (!model || strcmp(model, t->model->json) != 0)
        return mpt__fail(MPT_ERR_PARSE, "checkpoint %s: written for another model", path);
    char *mine = mpt__train_config_json(&t->cfg);
    json_t *a = saved ? json_loads(saved, 0, NULL) : NULL, *b = mine ? json_loads(mine, 0, NULL) : NULL;
    if (!a || !b) {
        status = mpt__fail(MPT_ERR_PARSE, "checkpoint %s: metadata \"config\" is missing or "
                           "malformed", path);
    } else if (!json_equal(a, b)) {
        /* Name the first setting that differs, with both values. */
        const char *key;
        char *now = NULL, *was = NULL;
        if (!mpt__json_first_difference(b, a, &key, &now, &was)) /* a key this run lacks */
            mpt__json_first_difference(a, b, &key, &was, &now);
        status = mpt__fail(MPT_ERR_PARSE, "checkpoint %s: written with %s %s, this run has "
                           "%s; resume with the same settings", path, key, was ? was : "?",
                           now ? now : "?");
        free(was);
        free(now);
    }
    json_decref(a);
    json_decref(b);
    free(mine);
    return status;
}

int mpt_trainer_load(mpt_trainer_t *t, const char *path, mpt_data_position_t *pos)
{
    ckpt_ctx c = {0};
    mpt__st_file_t *f = NULL;
    uint64_t step = 0, epoch = 0, batch_index = 0, skipped = 0;
    int status;
    MPT_TRY(mpt__st_read(path, &f));
    c.in = f, c.path = path;
    MPT_TRY(check_crc(f, path));
    MPT_TRY(check_compatible(t, f, path));
    const char *data = mpt__st_meta(f, "data");
    if (data && t->data_id[0] && strcmp(data, t->data_id) != 0 && !t->allow_other_data) {
        status = mpt__fail(MPT_ERR_PARSE,
                           "checkpoint %s: written for other data (%s; this run's: %s): resume "
                           "on the same data, or allow other data to continue on purpose",
                           path, data, t->data_id);
        goto out;
    }
    MPT_TRY(meta_number(f, path, "step", &step));
    MPT_TRY(meta_number(f, path, "epoch", &epoch));
    MPT_TRY(meta_number(f, path, "batch_index", &batch_index));
    if (mpt__st_meta(f, "skipped_steps"))
        MPT_TRY(meta_number(f, path, "skipped_steps", &skipped));
    if (skipped > step) {
        status = mpt__fail(MPT_ERR_PARSE, "checkpoint %s: %llu skipped steps of %llu", path,
                           (unsigned long long)skipped, (unsigned long long)step);
        goto out;
    }
    MPT_TRY(alloc_state(t, &c));
    MPT_TRY(visit(t->model, take_tensor, &c));
    MPT_TRY(check_finite(t, c.state, path,
                         "not loaded (--allow-nonfinite-checkpoint, or "
                         "mpt_trainer_allow_nonfinite_checkpoint, loads it to inspect it)",
                         t->allow_nonfinite));
    /* Only now, with everything checked, does the trainer change.  A device
     * failure past this point leaves it part restored (see mpt.h). */
    MPT_TRY(mpt__trainer_write_params(t, c.state[0]));
    MPT_TRY(mpt__trainer_write_slot(t, 0, c.state[1]));
    MPT_TRY(mpt__trainer_write_slot(t, 1, c.state[2]));
    mpt__trainer_set_step(t, step);
    t->skipped = skipped, t->skipped_in_row = 0;
    if (pos)
        *pos = (mpt_data_position_t){epoch, batch_index};
out:
    mpt__st_free(f);
    free_state(&c);
    return status;
}
