/*
 * tests/reference.h: the one comparison every numeric test uses, so that
 * tolerances are stated once per call site and printed on failure.
 * |got - want| <= abs_tol + rel_tol * |want|: the absolute margin covers
 * values near zero, the relative one the rest (as CLBlast's tests do).
 */
#ifndef MPT_TEST_REFERENCE_H
#define MPT_TEST_REFERENCE_H

#include <math.h>
#include <stddef.h>

#include <check.h>

/* Asserts every element of got matches want; names the first mismatch. */
static inline void ck_assert_close(const float *got, const double *want, size_t n,
                                   double abs_tol, double rel_tol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        int ok = isnan(w) ? isnan(g) : fabs(g - w) <= abs_tol + rel_tol * fabs(w);
        ck_assert_msg(ok, "%s[%zu] = %.9g, want %.9g (abs tol %g, rel tol %g)", what, i, g, w,
                      abs_tol, rel_tol);
    }
}

/* The same against a float reference. */
static inline void ck_assert_close_f(const float *got, const float *want, size_t n,
                                     double abs_tol, double rel_tol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        int ok = isnan(w) ? isnan(g) : fabs(g - w) <= abs_tol + rel_tol * fabs(w);
        ck_assert_msg(ok, "%s[%zu] = %.9g, want %.9g (abs tol %g, rel tol %g)", what, i, g, w,
                      abs_tol, rel_tol);
    }
}

#endif
