/*
 * device/host_blas.h: the host BLAS's CBLAS and OpenBLAS calls, under
 * their usual names whichever OpenBLAS configure chose (configure.ac,
 * --with-host-blas): Debian's, or the current one from PyPI that
 * scripts/install-host-blas.sh installs, whose every symbol carries a
 * prefix (its pkg-config Cflags define BLAS_SYMBOL_PREFIX=scipy_) so that
 * it never clashes with another BLAS in the process.  Never installed.
 */
#ifndef MPT_DEVICE_HOST_BLAS_H
#define MPT_DEVICE_HOST_BLAS_H

#include "config.h"

#include <cblas.h>

#ifdef BLAS_SYMBOL_PREFIX
#define MPT_BLAS_JOIN_(prefix, name) prefix##name
#define MPT_BLAS_JOIN(prefix, name) MPT_BLAS_JOIN_(prefix, name)
#define cblas_sgemm MPT_BLAS_JOIN(BLAS_SYMBOL_PREFIX, cblas_sgemm)
#define openblas_set_num_threads MPT_BLAS_JOIN(BLAS_SYMBOL_PREFIX, openblas_set_num_threads)
#define openblas_get_num_threads MPT_BLAS_JOIN(BLAS_SYMBOL_PREFIX, openblas_get_num_threads)
#define openblas_get_config MPT_BLAS_JOIN(BLAS_SYMBOL_PREFIX, openblas_get_config)
#endif

#endif
