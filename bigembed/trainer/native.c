/* Two hot loops of the training step in C: the ranking loss's gradients in the fused step's wide
 * layout, touching only the active hinges; and, with the table rows prefetched, the gather of a
 * batch's rows and row-wise Adagrad.
 *
 * Built at run time by bigembed/trainer/native.py (a C compiler, no Python or torch headers) and
 * called through ctypes, which releases the interpreter lock, so Hogwild workers overlap.
 *
 * The layout is kernels.wide_score_gradients's: W holds, chunk by chunk, n blocks Z of c + U rows
 * (the chunk's c rhs rows R, then the rhs side's U sampled rows), then the B = n c queries Q, then
 * the lhs side's U sampled rows M per chunk. S1 (n, c, c + U) = Q Z^T per chunk, with the
 * positives on the diagonal of its first c columns; Sl (n, c, U) = R M^T.
 *
 * A hinge max(0, margin - pos + neg) is active where it is positive; its gradient is the edge's
 * weight on the negative's score and minus that on the positive's. After the first epoch some 2-5%
 * of the hinges are active, so the four backward products (two thirds of the step's flops) reduce
 * to two row updates of length d per active hinge. The caller runs the dense products instead
 * when too many are active (at the start of training).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int64_t bigembed_native_abi(void) { return 4; }

static inline void axpy(float *restrict y, const float *restrict x, float a, int64_t d) {
    for (int64_t t = 0; t < d; t++) y[t] += a * x[t];
}

/* Writes dW (every row, zeros included) and *active_out (the number of active hinges); returns the
 * weighted loss. A NaN score makes the loss NaN. Returns NAN with *active_out = -1 if out of memory. */
double bigembed_wide_ranking(int64_t n, int64_t c, int64_t U, int64_t d, const float *S1, const float *Sl,
                             const float *weight, float margin, const float *W, float *dW, int64_t *active_out) {
    const int64_t cu = c + U, B = n * c, nz = n * cu;
    const float *Zall = W, *Qall = W + nz * d, *Mall = W + (nz + B) * d;
    float *dZall = dW, *dQall = dW + nz * d, *dMall = dW + (nz + B) * d;
    int32_t *list = malloc(sizeof(int32_t) * (size_t)(cu + c + U));
    if (list == NULL) {
        *active_out = -1;
        return NAN;
    }
    int32_t *in_batch = list + cu, *sampled = in_batch + c;
    double total = 0.0;
    int64_t active = 0;
    int nan_seen = 0;
    for (int64_t k = 0; k < n; k++) {
        const float *Z = Zall + k * cu * d, *Q = Qall + k * c * d, *M = Mall + k * U * d;
        float *dZ = dZall + k * cu * d, *dQ = dQall + k * c * d, *dM = dMall + k * U * d;
        memset(dZ, 0, sizeof(float) * (size_t)(cu * d));
        memset(dQ, 0, sizeof(float) * (size_t)(c * d));
        memset(dM, 0, sizeof(float) * (size_t)(U * d));
        const float *s1 = S1 + k * c * cu, *sl = Sl + k * c * U, *w = weight + k * c;
        for (int64_t i = 0; i < c; i++) {
            const float pos = s1[i * cu + i], shift = margin - pos, wi = w[i];
            /* the active candidates, listed without branches: every index is written, the count
             * moves on only for the active ones */
            int64_t nr = 0, nb = 0, ns = 0;
            for (int64_t j = 0; j < cu; j++) {  /* rhs side: Q_i against the chunk's Z rows */
                const float h = s1[i * cu + j] + shift;
                nan_seen |= h != h;
                list[nr] = (int32_t)j;
                nr += (h > 0.0f) & (j != i);
            }
            for (int64_t j = 0; j < c; j++) {  /* lhs side, in-batch: the chunk's queries against R_i */
                const float h = s1[j * cu + i] + shift;
                nan_seen |= h != h;
                in_batch[nb] = (int32_t)j;
                nb += (h > 0.0f) & (j != i);
            }
            for (int64_t j = 0; j < U; j++) {  /* lhs side, sampled: M rows against R_i */
                const float h = sl[i * U + j] + shift;
                nan_seen |= h != h;
                sampled[ns] = (int32_t)j;
                ns += h > 0.0f;
            }
            const int64_t count = nr + nb + ns;
            if (count == 0) continue;
            const float *Qi = Q + i * d, *Ri = Z + i * d;
            float *dQi = dQ + i * d, *dRi = dZ + i * d;
            double loss = 0.0;
            for (int64_t t = 0; t < nr; t++) {
                const int64_t j = list[t];
                loss += s1[i * cu + j] + shift;
                axpy(dQi, Z + j * d, wi, d);
                axpy(dZ + j * d, Qi, wi, d);
            }
            for (int64_t t = 0; t < nb; t++) {
                const int64_t j = in_batch[t];
                loss += s1[j * cu + i] + shift;
                axpy(dQ + j * d, Ri, wi, d);
                axpy(dRi, Q + j * d, wi, d);
            }
            for (int64_t t = 0; t < ns; t++) {
                const int64_t j = sampled[t];
                loss += sl[i * U + j] + shift;
                axpy(dRi, M + j * d, wi, d);
                axpy(dM + j * d, Ri, wi, d);
            }
            const float g = -wi * (float)count;  /* the positive's gradient, both sides together */
            axpy(dQi, Ri, g, d);
            axpy(dRi, Qi, g, d);
            total += loss * wi;
            active += count;
        }
    }
    free(list);
    *active_out = active;
    return nan_seen ? NAN : total;
}

/* Row-wise Adagrad on the rows idx[0..m) of table (rows of d floats) from g (m rows, used as
 * scratch), state: one float per row. A row named more than once takes one step with its gradients
 * summed: slot (int32, one per table row, any content) marks each row's last position, earlier
 * positions add into it, and the last position makes the step. Rows longer than max_norm (> 0)
 * after their step are scaled back to it. The rows a few positions ahead are prefetched, since a
 * batch's rows lie anywhere in a table much larger than the caches. */
#define PREFETCH_AHEAD 8

static inline float sum_squares(const float *x, int64_t d) {
    float acc[16] = {0};
    int64_t t = 0;
    for (; t + 16 <= d; t += 16)
        for (int u = 0; u < 16; u++) acc[u] += x[t + u] * x[t + u];
    float s = 0.0f;
    for (; t < d; t++) s += x[t] * x[t];
    for (int u = 0; u < 16; u++) s += acc[u];
    return s;
}

static inline void prefetch_row(const float *row, int64_t d) {
    for (int64_t t = 0; t < d; t += 16) __builtin_prefetch(row + t, 1, 1);
}

void bigembed_row_adagrad(int64_t m, int64_t d, const int64_t *idx, float *g, float *table, float *state,
                          int32_t *slot, float lr, float max_norm, float eps) {
    for (int64_t p = 0; p < m; p++) slot[idx[p]] = (int32_t)p;
    for (int64_t p = 0; p < m; p++) {
        if (p + PREFETCH_AHEAD < m) {
            const int64_t ahead = idx[p + PREFETCH_AHEAD];
            prefetch_row(table + ahead * d, d);
            __builtin_prefetch(state + ahead, 1, 1);
        }
        const int64_t r = idx[p];
        float *gp = g + p * d;
        const int64_t last = slot[r];
        if (last != p) {  /* an earlier position of a repeated row: add into its last one */
            axpy(g + last * d, gp, 1.0f, d);
            continue;
        }
        const float s = state[r] + sum_squares(gp, d) / (float)d;
        state[r] = s;
        const float step = -lr * (1.0f / (sqrtf(s) + eps));
        float *row = table + r * d;
        axpy(row, gp, step, d);
        if (max_norm > 0.0f) {
            const float norm = sqrtf(sum_squares(row, d));
            if (norm > max_norm) {
                const float scale = max_norm / norm;
                for (int64_t t = 0; t < d; t++) row[t] *= scale;
            }
        }
    }
}

/* out[p] = table[idx[p]] for rows of d floats, prefetching the rows a few positions ahead. */
void bigembed_gather(int64_t m, int64_t d, const int64_t *idx, const float *table, float *out) {
    for (int64_t p = 0; p < m; p++) {
        if (p + PREFETCH_AHEAD < m) {
            const float *ahead = table + idx[p + PREFETCH_AHEAD] * d;
            for (int64_t t = 0; t < d; t += 16) __builtin_prefetch(ahead + t, 0, 1);
        }
        memcpy(out + p * d, table + idx[p] * d, sizeof(float) * (size_t)d);
    }
}
