/*
 * trace/progress.c: the progress line of mpt.h (mpt_progress_line), the
 * one mpt-train redraws on a terminal.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "core/internal.h"

static void format_eta(double s, char *buf, size_t size)
{
    if (!(s >= 0 && s <= 1e7))
        snprintf(buf, size, "--:--");
    else if (s >= 3600)
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

void mpt_progress_line(const mpt_step_report_t *r, uint64_t epoch,
                       const mpt_device_step_t *devices, size_t ndevices, char *buf, size_t size)
{
    char eta[32], total[32] = "";
    size_t len;
    if (size == 0)
        return;
    format_eta(r->eta_s, eta, sizeof eta);
    if (r->total_steps)
        snprintf(total, sizeof total, "/%" PRIu64, r->total_steps);
    int n = snprintf(buf, size, "epoch %" PRIu64 " step %" PRIu64 "%s  loss %.4f  %.0f samples/s",
                     epoch, r->step, total, r->loss, r->samples_per_s);
    len = n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
    if (r->skipped_steps && len + 32 < size) { /* non-finite steps that updated nothing */
        n = snprintf(buf + len, size - len, "  skipped %" PRIu64, r->skipped_steps);
        len += n > 0 ? (size_t)n : 0;
    }
    for (size_t i = 0, shown = 0; i < ndevices && len + 16 < size; i++) {
        if (isnan(devices[i].busy))
            continue;
        n = snprintf(buf + len, size - len, "%s%.0f%%", shown++ ? " " : "  busy ",
                     100 * devices[i].busy);
        len += n > 0 ? (size_t)n : 0;
    }
    if (len < size)
        snprintf(buf + len, size - len, "  ETA %s", eta);
}
