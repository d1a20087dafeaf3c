/*
 * train_memory.c: an MLP trained on data made in memory, under the plan mpt
 * makes for every local device; docs/library.md walks through it.
 * Build:  cc train_memory.c $(pkg-config --cflags --libs mpt) -o train_memory
 * Exit status: 0 when the loss halves and the accuracy passes 90%, else 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <mpt.h>

#define CHECK(call)                                                                    \
    if ((call) < 0)                                                                    \
    return fprintf(stderr, "train_memory: %s: %s\n", #call, mpt_last_error()), 1

enum { N = 2048, IN = 16, CLASSES = 4, BATCH = 64, STEPS = 200 };
static float x[N * IN];
static int32_t y[N];

int main(void)
{
    mpt_model_builder_t *b; mpt_model_t *model; mpt_dataset_t *train, *test; mpt_data_t *data;
    mpt_devices_t *devs; mpt_cluster_t *cluster; mpt_plan_t *plan; mpt_trainer_t *t;
    mpt_train_config_t cfg; mpt_plan_request_t req; mpt_fit_options_t fit;
    double loss0, acc0, loss, acc;

    srand(1); /* a separable task: the class is the quadrant of (x0, x1) */
    for (int i = 0; i < N * IN; i++)
        x[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
    for (int i = 0; i < N; i++)
        y[i] = (x[i * IN] > 0) + 2 * (x[i * IN + 1] > 0);
    CHECK(mpt_dataset_from_memory(N, IN, CLASSES, x, y, &train)); /* copied */
    CHECK(mpt_dataset_from_memory(N, IN, CLASSES, x, y, &test));

    CHECK(mpt_model_builder_new("mlp", 1, (size_t[]){IN}, &b));
    CHECK(mpt_model_builder_add(b, "linear", "units=64"));
    CHECK(mpt_model_builder_add(b, "relu", NULL));
    CHECK(mpt_model_builder_add(b, "linear", "units=4"));
    CHECK(mpt_model_builder_add(b, "softmax_cross_entropy", NULL));
    CHECK(mpt_model_builder_build(b, &model));

    CHECK(mpt_devices_open(NULL, &devs)); /* every device, or those of MPT_DEVICES */
    CHECK(mpt_cluster_local(devs, NULL, &cluster)); /* profiles: measured once, cached */
    CHECK(mpt_data_from_datasets(train, test, model, BATCH, 1, &data)); /* owns both sets */
    mpt_fit_options_default(&fit);
    fit.steps = STEPS;
    mpt_train_config_default(&cfg);
    cfg.batch = BATCH; /* the cosine schedule decays over the run: */
    cfg.total_steps = mpt_fit_total_steps(&fit, data);
    mpt_plan_request_default(&req);
    req.batch = cfg.batch; /* one batch size: a plan made for another is refused */
    CHECK(mpt_plan_create(model, cluster, &req, &plan));
    CHECK(mpt_trainer_create_planned(model, devs, plan, &cfg, NULL, cluster, &t));

    CHECK(mpt_trainer_evaluate(t, x, y, N, &loss0, &acc0));
    CHECK(mpt_trainer_fit(t, data, &fit)); /* STEPS batches of the seeded shuffle */
    CHECK(mpt_trainer_evaluate(t, x, y, N, &loss, &acc));
    printf("%zu devices: loss %.3f -> %.3f, accuracy %.1f%% -> %.1f%%\n",
           mpt_trainer_device_count(t), loss0, loss, 100 * acc0, 100 * acc);

    mpt_data_free(data), mpt_trainer_free(t), mpt_plan_free(plan);
    mpt_cluster_free(cluster), mpt_devices_free(devs);
    mpt_model_free(model), mpt_model_builder_free(b);
    return loss < loss0 / 2 && acc > 0.9 ? 0 : 1;
}
