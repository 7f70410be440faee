/* The ranking loss's gradients in the fused step's wide layout, touching only the active hinges.
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

int64_t bigembed_native_abi(void) { return 1; }

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
