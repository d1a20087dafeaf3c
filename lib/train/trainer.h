/*
 * train/trainer.h: the trainer object behind the public API, shared by
 * trainer.c and checkpoint.c.  Never installed.
 */
#ifndef MPT_TRAIN_TRAINER_H
#define MPT_TRAIN_TRAINER_H

#include "engine/executor.h"
#include "train/data.h"

struct mpt_trainer {
    const mpt__model_t *model;
    mpt_train_config_t cfg;
    mpt__optim_cfg_t opt;
    mpt__executor_t *ex;
};

#endif
