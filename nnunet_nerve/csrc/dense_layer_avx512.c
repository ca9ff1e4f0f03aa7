/* Fused kernels for one FC-DenseNet dense layer on the CPU (AVX-512F, OpenMP):
 *
 *   y = dropout(conv3x3(relu(scale * x + shift)))   with C input and K (12 or 16) output maps
 *
 * x is a slice [0, C) of a channels-last (NHWC) feature stack with any pixel strides. The
 * batch norm + ReLU is applied on the fly, 16 channels at a time into an L1 scratch, so no
 * pass over the stack writes a normalised copy (the forward clamps it, the backward
 * recomputes it); the convolution runs as a matrix product over the input pixels with all
 * 9 * K (tap, output map) columns at once (108 for K = 12: whole AVX-512 vectors, where a
 * K = 12 output-channel blocking fills 12 of 16 lanes), spread onto the 3 x 3 neighbouring
 * output pixels.
 *
 * Column layout shared by all kernels ("tap columns"): j = ky * 3K + kr * K + k, with
 * kr = 2 - kx, padded with zeros to NV * 16 columns. With this order the 3K columns of one
 * kernel row ky of input pixel (iy, ix) land on the 3K contiguous floats of output row
 * iy - ky + 1 that start at output pixel ix - 1: output pixel ox = ix + kr - 1 receives
 * tap kx = 2 - kr. The backward reads the same 3K floats of the padded output gradient as
 * the pixel's neighbourhood.
 *
 * Built by nnunet_nerve/fused_kernels.py with the system C compiler at first use; every
 * function returns nothing and checks nothing: the Python side validates shapes.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <omp.h>

#define NVMAX 9  /* ceil(9 * 16 / 16) */

static inline __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* Keeps a reused vector in a register: without it GCC folds the load into every FMA that
 * reads it, and the repeated 64-byte loads saturate the L1 bandwidth (two 32-byte loads per
 * cycle on AMD Zen 4, exactly one 512-bit FMA's memory operand). */
#define IN_REGISTER(v) __asm__("" : "+v"(v))

/* _mm512_set1_ps(*p) as an integer broadcast from memory (vpbroadcastd): on Zen 4 the float
 * form (vbroadcastss) takes a slot of the FMA pipes, about 7 % of an FMA-bound loop. */
static inline __m512 splat(const float *p) {
    return _mm512_castsi512_ps(_mm512_set1_epi32(*(const int *)p));
}

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }

/* ---------------------------------------------------------------- dropout */

/* Dropout keep-masks without a mask tensor: element i (its index in the NHWC layout of the
 * maps) is kept when hash(hash(i ^ s1) + s2) < threshold, unsigned 32-bit, with Wellons'
 * "lowbias32" integer hash; the seeds s1, s2 come from torch's generator, so that
 * torch.manual_seed makes runs repeat, and the backward pass recomputes the same mask. */
static inline __m512i lowbias32(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

typedef struct { uint32_t s1, s2, threshold; int on; } dropout_t;

/* keep-mask of the 16 elements base .. base + 15 */
static inline __mmask16 kept(dropout_t d, int64_t base) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i i = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)base), lane);
    __m512i hsh = lowbias32(_mm512_add_epi32(lowbias32(_mm512_xor_si512(i, _mm512_set1_epi32((int)d.s1))),
                                             _mm512_set1_epi32((int)d.s2)));
    return _mm512_cmplt_epu32_mask(hsh, _mm512_set1_epi32((int)d.threshold));
}

static inline dropout_t dropout_of(const int64_t *seeds) {
    dropout_t d = {0, 0, 0, 0};
    if (seeds) {
        d.s1 = (uint32_t)seeds[0]; d.s2 = (uint32_t)seeds[1]; d.threshold = (uint32_t)seeds[2]; d.on = 1;
    }
    return d;
}

/* out[e] = 1 where element e of an n_pixels x C map is kept, else 0 (for tests and checks). */
void nerve_keep_mask(int64_t n_pixels, int C, const int64_t *seeds, uint8_t *out) {
    dropout_t d = dropout_of(seeds);
    int64_t total = n_pixels * C;
    for (int64_t e = 0; e < total; e += 16) {
        __mmask16 m = kept(d, e) & lanes((int)(total - e < 16 ? total - e : 16));
        for (int l = 0; l < 16 && e + l < total; l++) out[e + l] = (m >> l) & 1;
    }
}

/* t[img, y, x, c] = 0 where the element is dropped (channels-last strides, channel stride 1). */
void nerve_dropout_(float *t, int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                    const int64_t *seeds, int nthreads) {
    dropout_t d = dropout_of(seeds);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < (int64_t)n * h; r++) {
        int img = (int)(r / h), y = (int)(r % h);
        for (int x = 0; x < w; x++) {
            float *p = t + img * sn + y * sh + x * sw;
            int64_t base = (r * w + x) * C;
            for (int c = 0; c < C; c += 16) {
                __mmask16 m = lanes(C - c);
                __mmask16 drop = m & ~kept(d, base + c);
                _mm512_mask_storeu_ps(p + c, drop, _mm512_setzero_ps());
            }
        }
    }
}

/* split `total` items over the team: [*lo, *hi) for this thread */
static inline void share(int64_t total, int64_t *lo, int64_t *hi) {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *lo = total * t / nt;
    *hi = total * (t + 1) / nt;
}

/* ---------------------------------------------------------------- forward */

/* z[p][:] = sum_c clamp(x[p][c]) * wp[c][:] (NV vectors of tap columns) for P consecutive
 * input pixels. */
static inline __attribute__((always_inline)) void fwd_pixels(
        const int P, const int NV, const float *x, int64_t sw, int C,
        const float *low, const float *high, const float *wp, float *z) {
    __m512 acc[4][NVMAX];
    float rbuf[4][16] __attribute__((aligned(64)));
    for (int p = 0; p < P; p++)
        for (int v = 0; v < NV; v++) acc[p][v] = _mm512_setzero_ps();
    for (int c0 = 0; c0 < C; c0 += 16) {
        int nc = C - c0 < 16 ? C - c0 : 16;
        __mmask16 m = lanes(nc);
        __m512 lo = _mm512_maskz_loadu_ps(m, low + c0), hi = _mm512_maskz_loadu_ps(m, high + c0);
        for (int p = 0; p < P; p++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + p * sw + c0);
            _mm512_store_ps(rbuf[p], _mm512_min_ps(_mm512_max_ps(xv, lo), hi));
        }
        const float *wc = wp + (int64_t)c0 * NV * 16;
        for (int cc = 0; cc < nc; cc++, wc += NV * 16) {
            __m512 b[4];
            for (int p = 0; p < P; p++) b[p] = splat(&rbuf[p][cc]);
            for (int v = 0; v < NV; v++) {
                __m512 wv = _mm512_load_ps(wc + 16 * v);
                IN_REGISTER(wv);
                for (int p = 0; p < P; p++) acc[p][v] = _mm512_fmadd_ps(b[p], wv, acc[p][v]);
            }
        }
    }
    for (int p = 0; p < P; p++)
        for (int v = 0; v < NV; v++) _mm512_store_ps(z + (int64_t)p * NV * 16 + 16 * v, acc[p][v]);
}

/* Tap columns of one input row: z[ix + 1] for pixels ix = 0 .. w-1 (z[0], z[w + 1] stay zero). */
static void fwd_row(const int NV, const float *xrow, int64_t sw, int w, int C,
                    const float *low, const float *high, const float *wp, float *z) {
    const int64_t zs = (int64_t)NV * 16;
    int ix = 0;
    for (; ix + 3 <= w; ix += 3) fwd_pixels(3, NV, xrow + ix * sw, sw, C, low, high, wp, z + (ix + 1) * zs);
    for (; ix < w; ix++) fwd_pixels(1, NV, xrow + ix * sw, sw, C, low, high, wp, z + (ix + 1) * zs);
}

/* out_row[ox] (+)= what the input row with tap columns z gives output row iy - ky + 1:
 * for kr = 0, 1, 2 the columns ky * 3K + kr * K .. + K of input pixel ox - kr + 1. */
static void spread_row(const int K, int64_t zs, const float *z, int ky, int w, float *out_row, int first) {
    __mmask16 km = lanes(K);
    const float *z0 = z + ky * 3 * K;
    for (int ox = 0; ox < w; ox++) {
        __m512 v = _mm512_maskz_loadu_ps(km, z0 + (ox + 2) * zs);
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(km, z0 + (ox + 1) * zs + K));
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(km, z0 + ox * zs + 2 * K));
        float *d = out_row + (int64_t)ox * K;
        if (!first) v = _mm512_add_ps(_mm512_maskz_loadu_ps(km, d), v);
        _mm512_mask_storeu_ps(d, km, v);
    }
}

/* Bands of output rows per image, so that a batch smaller than the team still has work for
 * every thread (a band also computes the input rows just above and below it). */
int nerve_fwd_bands(int n, int h, int nthreads) {
    int bands = n >= nthreads ? 1 : cdiv(nthreads, n);
    return bands > h ? h : bands;
}

/* per thread: the tap columns of one row of pixels and three output rows */
static inline int64_t fwd_thread_floats(int w, int K) {
    return ((int64_t)(w + 2) * cdiv(9 * K, 16) * 16 + 3 * (int64_t)w * K + 15) / 16 * 16;
}

int64_t nerve_fwd_scratch_floats(int n, int h, int w, int K, int nthreads) {
    (void)n; (void)h;
    return (int64_t)nthreads * fwd_thread_floats(w, K);
}

/* out[img, oy, ox, k] (strides osn, osh, osw, channel stride 1) =
 *     keep(img, oy, ox, k) * (conv(clamp(x)) + resp[k][ry][rx]),
 * ry = 0 on the first row, 2 on the last, 1 inside (rx likewise; resp is [K][3][3] and holds
 * the bias and the response of the folded batch-norm offset); keep is the dropout mask of
 * `seeds` (s1, s2, threshold; NULL: no dropout). sums (double [2][K], or NULL) get the sum and sum of squares of every output map. */
void nerve_dense_fwd(const float *x, int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                     int K, const float *low, const float *high, const float *wp, const float *resp,
                     const int64_t *seeds, float *out, int64_t osn, int64_t osh, int64_t osw,
                     double *sums, float *scratch, int nthreads) {
    const int NV = cdiv(9 * K, 16);
    const int64_t zs = (int64_t)NV * 16;
    int bands = nerve_fwd_bands(n, h, nthreads);
    int64_t items = (int64_t)n * bands;
    dropout_t drop = dropout_of(seeds);
    double partial[64][2][16];
    int team = nthreads > 64 ? 64 : nthreads;
    memset(partial, 0, sizeof(partial));
#pragma omp parallel num_threads(team)
    {
        int64_t lo, hi;
        share(items, &lo, &hi);
        int me = omp_get_thread_num();
        float *z = scratch + (int64_t)me * fwd_thread_floats(w, K);
        float *ring = z + (int64_t)(w + 2) * zs;
        double *mine = partial[me][0];
        __mmask16 km = lanes(K);
        __m512 rv[3][3];
        for (int ry = 0; ry < 3; ry++)
            for (int rx = 0; rx < 3; rx++) {
                float tmp[16] = {0};
                for (int k = 0; k < K; k++) tmp[k] = resp[k * 9 + ry * 3 + rx];
                rv[ry][rx] = _mm512_loadu_ps(tmp);
            }
        memset(z, 0, sizeof(float) * zs);
        memset(z + (int64_t)(w + 1) * zs, 0, sizeof(float) * zs);
        for (int64_t it = lo; it < hi; it++) {
            int img = (int)(it / bands), b = (int)(it % bands);
            int r0 = (int)((int64_t)h * b / bands), r1 = (int)((int64_t)h * (b + 1) / bands);
            if (r0 >= r1) continue;
            int first_in = r0 > 0 ? r0 - 1 : 0, last_in = r1 < h ? r1 : h - 1;
            for (int iy = first_in; iy <= last_in; iy++) {
                if (NV == 7) fwd_row(7, x + img * sn + iy * sh, sw, w, C, low, high, wp, z);
                else fwd_row(9, x + img * sn + iy * sh, sw, w, C, low, high, wp, z);
                /* output rows iy + 1, iy, iy - 1 (ky = 0, 1, 2); row oy's first contribution
                 * comes from input row max(oy - 1, first_in) */
                for (int ky = 0; ky < 3; ky++) {
                    int oy = iy - ky + 1;
                    if (oy < r0 || oy >= r1) continue;
                    int first = iy == (oy - 1 > first_in ? oy - 1 : first_in);
                    spread_row(K, zs, z, ky, w, ring + (int64_t)(oy % 3) * w * K, first);
                }
                /* output row iy - 1 is now complete, and row h - 1 after the last input row */
                for (int oy = iy - 1; oy <= iy; oy++) {
                    if (oy < r0 || oy >= r1 || (oy == iy && iy != h - 1)) continue;
                    const float *src = ring + (int64_t)(oy % 3) * w * K;
                    int ry = h == 1 ? 1 : (oy == 0 ? 0 : (oy == h - 1 ? 2 : 1));
                    __m512 s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps();
                    int64_t krow = ((int64_t)img * h + oy) * w * K;
                    float *orow = out + img * osn + oy * osh;
                    for (int ox = 0; ox < w; ox++) {
                        int rx = w == 1 ? 1 : (ox == 0 ? 0 : (ox == w - 1 ? 2 : 1));
                        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(km, src + (int64_t)ox * K), rv[ry][rx]);
                        if (drop.on) v = _mm512_maskz_mov_ps(kept(drop, krow + (int64_t)ox * K), v);
                        _mm512_mask_storeu_ps(orow + ox * osw, km, v);
                        s1 = _mm512_add_ps(s1, v);
                        s2 = _mm512_fmadd_ps(v, v, s2);
                    }
                    float a[16], q[16];
                    _mm512_storeu_ps(a, s1);
                    _mm512_storeu_ps(q, s2);
                    for (int k = 0; k < K; k++) { mine[k] += a[k]; mine[16 + k] += q[k]; }
                }
            }
        }
    }
    if (sums) {
        for (int k = 0; k < K; k++) {
            sums[k] = 0; sums[K + k] = 0;
            for (int t = 0; t < team; t++) { sums[k] += partial[t][0][k]; sums[K + k] += partial[t][1][k]; }
        }
    }
}

/* ---------------------------------------------------------------- backward */

/* gyp[img][oy + 1][ox + 1][k] = (g + a[k] * y + b[k]) * keep at pixel (img, oy, ox), map k:
 * the output gradient of a layer with output maps y, completed by the batch-statistics terms
 * a * y + b of the later layers that read y (skipped when a is NULL), times the dropout mask
 * of `seeds` (NULL: none); zero border. sum_g[k] = sum of gyp. g and y: channels-last strides. */
void nerve_pad_grad(const float *g, int64_t sn, int64_t sh, int64_t sw,
                    const float *y, int64_t ysn, int64_t ysh, int64_t ysw,
                    const float *a, const float *b, int n, int h, int w, int K,
                    const int64_t *seeds, float *gyp, double *sum_g, int nthreads) {
    dropout_t drop = dropout_of(seeds);
    int64_t row_len = (int64_t)(w + 2) * K;
    double partial[64][16];
    int team = nthreads > 64 ? 64 : nthreads;
    memset(partial, 0, sizeof(partial));
    __mmask16 km = lanes(K);
    __m512 av = a ? _mm512_maskz_loadu_ps(km, a) : _mm512_setzero_ps();
    __m512 bv = a ? _mm512_maskz_loadu_ps(km, b) : _mm512_setzero_ps();
#pragma omp parallel num_threads(team)
    {
        int64_t lo, hi;
        share((int64_t)n * (h + 2), &lo, &hi);
        double *mine = partial[omp_get_thread_num()];
        for (int64_t r = lo; r < hi; r++) {
            int img = (int)(r / (h + 2)), py = (int)(r % (h + 2));
            float *dst = gyp + r * row_len;
            if (py == 0 || py == h + 1) { memset(dst, 0, sizeof(float) * row_len); continue; }
            int oy = py - 1;
            memset(dst, 0, sizeof(float) * K);
            memset(dst + (int64_t)(w + 1) * K, 0, sizeof(float) * K);
            __m512 s = _mm512_setzero_ps();
            for (int ox = 0; ox < w; ox++) {
                __m512 v = _mm512_maskz_loadu_ps(km, g + img * sn + oy * sh + ox * sw);
                if (a) v = _mm512_add_ps(v, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(km, y + img * ysn + oy * ysh + ox * ysw), bv));
                if (drop.on) v = _mm512_maskz_mov_ps(kept(drop, (((int64_t)img * h + oy) * w + ox) * K), v);
                _mm512_mask_storeu_ps(dst + (int64_t)(ox + 1) * K, km, v);
                s = _mm512_add_ps(s, v);
            }
            float a[16];
            _mm512_storeu_ps(a, s);
            for (int k = 0; k < K; k++) mine[k] += a[k];
        }
    }
    for (int k = 0; k < K; k++) {
        sum_g[k] = 0;
        for (int t = 0; t < team; t++) sum_g[k] += partial[t][k];
    }
}

/* g[img, y, x, c] += a[c] * t[img, y, x, c] + b[c] for c < C (channels-last strides). */
void nerve_add_affine_(float *g, int64_t sn, int64_t sh, int64_t sw, const float *t, int64_t tsn,
                       int64_t tsh, int64_t tsw, int n, int h, int w, int C, const float *a,
                       const float *b, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < (int64_t)n * h; r++) {
        int img = (int)(r / h), y = (int)(r % h);
        for (int x = 0; x < w; x++) {
            float *gp = g + img * sn + y * sh + x * sw;
            const float *tp = t + img * tsn + y * tsh + x * tsw;
            for (int c = 0; c < C; c += 16) {
                __mmask16 m = lanes(C - c);
                __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, tp + c),
                                           _mm512_maskz_loadu_ps(m, b + c));
                _mm512_mask_storeu_ps(gp + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, gp + c), v));
            }
        }
    }
}

/* register blocking of the input gradient: DATA_P pixels x DATA_V vectors of 16 channels */
#ifndef DATA_P
#define DATA_P 6
#endif
#ifndef DATA_V
#define DATA_V 4
#endif

/* P pixels x V channel vectors of the input gradient:
 *   d[p][c] = sum_j G[p][j] wt[j][c],  G[p][ky*3K + t] = gyp row (iy - ky + 2), float (ix+p)*K + t
 * then, where scale * x + shift > 0:  grad += k1 * d,  s1 += d,  s2 += d * x  (per channel). */
static inline __attribute__((always_inline)) void bwd_data_pixels(
        const int P, const int V, const int K, const float *const grows[3], int ix,
        const float *wt, int64_t cp, int cb, int C, const float *x, int64_t xsw,
        float *grad, int64_t gsw, const float *scale, const float *shift, const float *k1,
        float *s1, float *s2) {
    __m512 acc[DATA_P][DATA_V];
    for (int p = 0; p < P; p++)
        for (int v = 0; v < V; v++) acc[p][v] = _mm512_setzero_ps();
    const int seg = 3 * K;
    for (int ky = 0; ky < 3; ky++) {
        const float *gsrc = grows[ky] + (int64_t)ix * K;
        const float *wrow = wt + (int64_t)ky * seg * cp + cb;
        for (int t = 0; t < seg; t++, wrow += cp) {
            __m512 wv[DATA_V];
            for (int v = 0; v < V; v++) {
                wv[v] = _mm512_load_ps(wrow + 16 * v);
                IN_REGISTER(wv[v]);
            }
            for (int p = 0; p < P; p++) {
                __m512 b = splat(gsrc + p * K + t);
                for (int v = 0; v < V; v++) acc[p][v] = _mm512_fmadd_ps(b, wv[v], acc[p][v]);
            }
        }
    }
    for (int v = 0; v < V; v++) {
        int c = cb + 16 * v;
        __mmask16 cm = lanes(C - c);
        __m512 sc = _mm512_maskz_loadu_ps(cm, scale + c), sh = _mm512_maskz_loadu_ps(cm, shift + c);
        __m512 kk = _mm512_maskz_loadu_ps(cm, k1 + c);
        __m512 a1 = _mm512_load_ps(s1 + c), a2 = _mm512_load_ps(s2 + c);
        for (int p = 0; p < P; p++) {
            const float *xp = x + (int64_t)(ix + p) * xsw + c;
            float *gp = grad + (int64_t)(ix + p) * gsw + c;
            __m512 xv = _mm512_maskz_loadu_ps(cm, xp);
            __mmask16 on = _mm512_mask_cmp_ps_mask(cm, _mm512_fmadd_ps(sc, xv, sh), _mm512_setzero_ps(), _CMP_GT_OQ);
            __m512 d = _mm512_maskz_mov_ps(on, acc[p][v]);
            __m512 gv = _mm512_maskz_loadu_ps(cm, gp);
            _mm512_mask_storeu_ps(gp, cm, _mm512_fmadd_ps(d, kk, gv));
            a1 = _mm512_add_ps(a1, d);
            a2 = _mm512_fmadd_ps(d, xv, a2);
        }
        _mm512_store_ps(s1 + c, a1);
        _mm512_store_ps(s2 + c, a2);
    }
}

static inline __attribute__((always_inline)) void bwd_data_block(
        const int V, const int K, const float *const grows[3], int ix0, int ix1, const float *wt, int64_t cp,
        int cb, int C, const float *x, int64_t xsw, float *grad, int64_t gsw, const float *scale,
        const float *shift, const float *k1, float *s1, float *s2) {
    int ix = ix0, w = ix1;
    for (; ix + DATA_P <= w; ix += DATA_P)
        bwd_data_pixels(DATA_P, V, K, grows, ix, wt, cp, cb, C, x, xsw, grad, gsw, scale, shift, k1, s1, s2);
    for (; ix < w; ix++)
        bwd_data_pixels(1, V, K, grows, ix, wt, cp, cb, C, x, xsw, grad, gsw, scale, shift, k1, s1, s2);
}

#ifndef SEG
#define SEG 30   /* pixels per segment of the backward (5 groups of DATA_P = 6) */
#endif

/* dw[c][j] += sum over SEG pixels of t[px][c] * G[px][j] for CB channels from c. */
static inline __attribute__((always_inline)) void bwd_weight_channels(
        const int CB, const int NV, const float *tbuf, int64_t tstride, const float *gbuf, int np,
        float *dw, int c) {
    __m512 acc[3][NVMAX];
    for (int i = 0; i < CB; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_load_ps(dw + (int64_t)(c + i) * NV * 16 + 16 * v);
    for (int px = 0; px < np; px++) {
        const float *tp = tbuf + px * tstride + c;
        const float *gp = gbuf + (int64_t)px * NV * 16;
        __m512 b[3];
        for (int i = 0; i < CB; i++) b[i] = splat(tp + i);
        for (int v = 0; v < NV; v++) {
            __m512 gv = _mm512_load_ps(gp + 16 * v);
            IN_REGISTER(gv);
            for (int i = 0; i < CB; i++) acc[i][v] = _mm512_fmadd_ps(b[i], gv, acc[i][v]);
        }
    }
    for (int i = 0; i < CB; i++)
        for (int v = 0; v < NV; v++) _mm512_store_ps(dw + (int64_t)(c + i) * NV * 16 + 16 * v, acc[i][v]);
}

static void bwd_weight_segment(const int NV, const float *tbuf, int64_t tstride, const float *gbuf,
                               int np, float *dw, int C) {
    int c = 0;
    for (; c + 3 <= C; c += 3) bwd_weight_channels(3, NV, tbuf, tstride, gbuf, np, dw, c);
    for (; c < C; c++) bwd_weight_channels(1, NV, tbuf, tstride, gbuf, np, dw, c);
}

/* per thread: weight-gradient accumulators, SEG pixels of relu(scale x + shift) and of
 * output-gradient neighbourhoods, row sums (float) and totals (double) */
static inline int64_t bwd_thread_floats(int C, int K) {
    int64_t nv16 = (int64_t)cdiv(9 * K, 16) * 16, cp = (int64_t)cdiv(C, 16) * 16;
    return C * nv16 + SEG * cp + SEG * nv16 + 2 * cp + 4 * cp;
}

int64_t nerve_dense_bwd_scratch_floats(int C, int K, int nthreads) {
    return (int64_t)nthreads * bwd_thread_floats(C, K);
}

/* One dense layer's backward in one pass over its input x, from gyp (the zero-padded output
 * gradient, [n][h+2][w+2][K]), per pixel segment:
 *   dw[c][j] = sum over pixels of relu(scale x + shift)[c] * G[j]   (tap columns j, NV * 16)
 *   grad[c] += k1[c] * d[c] where scale x + shift > 0,  d[c] = sum_j G[j] wt[j][c]
 *   sums[c] = sum of the masked d, sums[C + c] = sum of masked d * x (double)
 * G: the 9K output-gradient values of the pixel's 3 x 3 neighbourhood in tap-column order;
 * wt: [9K][cp] (cp = C rounded up to 16, zero-padded). */
void nerve_dense_bwd(const float *gyp, int n, int h, int w, int K, int C,
                     const float *x, int64_t xsn, int64_t xsh, int64_t xsw,
                     const float *scale, const float *shift, const float *k1, const float *wt,
                     float *grad, int64_t gsn, int64_t gsh, int64_t gsw,
                     float *dw, double *sums, float *scratch, int nthreads) {
    const int NV = cdiv(9 * K, 16);
    int64_t nv16 = (int64_t)NV * 16;
    int64_t cp = (int64_t)cdiv(C, 16) * 16;
    int64_t row_len = (int64_t)(w + 2) * K;
    int64_t per_thread = bwd_thread_floats(C, K);
    const int seg = 3 * K;
#pragma omp parallel num_threads(nthreads)
    {
        int64_t lo, hi;
        share((int64_t)n * h, &lo, &hi);
        float *acc = scratch + (int64_t)omp_get_thread_num() * per_thread;
        float *tbuf = acc + C * nv16, *gbuf = tbuf + SEG * cp;
        float *s1 = gbuf + SEG * nv16, *s2 = s1 + cp;
        double *tot = (double *)(s2 + cp);
        memset(acc, 0, sizeof(float) * C * nv16);
        memset(tot, 0, sizeof(double) * 2 * cp);
        for (int64_t r = lo; r < hi; r++) {
            int img = (int)(r / h), iy = (int)(r % h);
            const float *xr = x + img * xsn + iy * xsh;
            float *gr = grad + img * gsn + iy * gsh;
            const float *grows[3];
            for (int ky = 0; ky < 3; ky++)
                grows[ky] = gyp + ((int64_t)img * (h + 2) + iy - ky + 2) * row_len;
            memset(s1, 0, sizeof(float) * 2 * cp);
            for (int x0 = 0; x0 < w; x0 += SEG) {
                int np = w - x0 < SEG ? w - x0 : SEG;
                for (int px = 0; px < np; px++) {
                    const float *xp = xr + (int64_t)(x0 + px) * xsw;
                    for (int c = 0; c < C; c += 16) {
                        __mmask16 m = lanes(C - c);
                        __m512 z = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, scale + c), _mm512_maskz_loadu_ps(m, xp + c),
                                                   _mm512_maskz_loadu_ps(m, shift + c));
                        _mm512_storeu_ps(tbuf + px * cp + c, _mm512_max_ps(z, _mm512_setzero_ps()));
                    }
                    float *gp = gbuf + px * nv16;
                    for (int v = 0; v < NV; v++) _mm512_store_ps(gp + 16 * v, _mm512_setzero_ps());
                    for (int ky = 0; ky < 3; ky++) {
                        const float *src = grows[ky] + (int64_t)(x0 + px) * K;
                        for (int t = 0; t < seg; t += 16) {
                            __mmask16 m = lanes(seg - t);
                            _mm512_mask_storeu_ps(gp + ky * seg + t, m, _mm512_maskz_loadu_ps(m, src + t));
                        }
                    }
                }
                if (NV == 7) bwd_weight_segment(7, tbuf, cp, gbuf, np, acc, C);
                else bwd_weight_segment(9, tbuf, cp, gbuf, np, acc, C);
                int cb = 0;
                for (; cb + 16 * DATA_V <= cp; cb += 16 * DATA_V)
                    bwd_data_block(DATA_V, K, grows, x0, x0 + np, wt, cp, cb, C, xr, xsw, gr, gsw, scale, shift, k1, s1, s2);
                switch ((cp - cb) / 16) {
                    case 3: bwd_data_block(3, K, grows, x0, x0 + np, wt, cp, cb, C, xr, xsw, gr, gsw, scale, shift, k1, s1, s2); break;
                    case 2: bwd_data_block(2, K, grows, x0, x0 + np, wt, cp, cb, C, xr, xsw, gr, gsw, scale, shift, k1, s1, s2); break;
                    case 1: bwd_data_block(1, K, grows, x0, x0 + np, wt, cp, cb, C, xr, xsw, gr, gsw, scale, shift, k1, s1, s2); break;
                    default: break;
                }
            }
            for (int64_t c = 0; c < C; c++) { tot[c] += s1[c]; tot[cp + c] += s2[c]; }
        }
    }
    for (int64_t i = 0; i < C * nv16; i++) {
        float t = 0;
        for (int th = 0; th < nthreads; th++) t += scratch[(int64_t)th * per_thread + i];
        dw[i] = t;
    }
    for (int64_t c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int th = 0; th < nthreads; th++) {
            const double *tot = (const double *)(scratch + (int64_t)th * per_thread + C * nv16 + SEG * cp + SEG * nv16 + 2 * cp);
            a += tot[c];
            b += tot[cp + c];
        }
        sums[c] = a;
        sums[C + c] = b;
    }
}

/* ---------------------------------------------------------------- transition down, classifier */

/* the statements run for every 2x2 window (img, i, j) of an h x w map and every 16 channels
 * from c (lanes m) */
#define FOR_WINDOWS_CHANNELS(n, h, w, C, ...)                                              \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                     \
    for (int64_t r = 0; r < (int64_t)(n) * ((h) / 2); r++) {                                \
        int img = (int)(r / ((h) / 2)), i = (int)(r % ((h) / 2));                           \
        for (int j = 0; j < (w) / 2; j++)                                                   \
            for (int c = 0; c < (C); c += 16) {                                             \
                __mmask16 m = lanes((C) - c);                                               \
                __VA_ARGS__                                                                 \
            }                                                                               \
    }

/* 2x2 max-pool (stride 2) of z * keep (dropout of `seeds`, NULL: none), channels-last:
 * out[img, i, j, c] = max over the window, win[img][i][j][c] = position in the window (0: (0, 0),
 * 1: (0, 1), 2: (1, 0), 3: (1, 1)) of its first maximum in that order, as max_pool2d picks it. */
void nerve_pool_(const float *z, int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                 const int64_t *seeds, float *out, int64_t osn, int64_t osh, int64_t osw,
                 uint8_t *win, int nthreads) {
    dropout_t drop = dropout_of(seeds);
    int ho = h / 2, wo = w / 2;
    FOR_WINDOWS_CHANNELS(n, h, w, C, {
        __m512 v[4];
        for (int k = 0; k < 4; k++) {
            int y = 2 * i + (k >> 1), x = 2 * j + (k & 1);
            v[k] = _mm512_maskz_loadu_ps(m, z + img * sn + y * sh + x * sw + c);
            if (drop.on)
                v[k] = _mm512_maskz_mov_ps(kept(drop, (((int64_t)img * h + y) * w + x) * C + c), v[k]);
        }
        __m512 mx = _mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3]));
        __m512i wi = _mm512_set1_epi32(3);
        for (int k = 2; k >= 0; k--)
            wi = _mm512_mask_mov_epi32(wi, _mm512_cmp_ps_mask(v[k], mx, _CMP_EQ_OQ), _mm512_set1_epi32(k));
        _mm512_mask_storeu_ps(out + img * osn + i * osh + j * osw + c, m, mx);
        _mm_mask_storeu_epi8(win + (((int64_t)img * ho + i) * wo + j) * C + c, m, _mm512_cvtepi32_epi8(wi));
    })
}

/* The backward of nerve_pool_: g[img, y, x, c] = keep * (the window's gradient at its winner,
 * 0 elsewhere); gout channels-last strides, g written with its own. */
void nerve_unpool_(const float *gout, int64_t sn, int64_t sh, int64_t sw, const uint8_t *win,
                   int n, int h, int w, int C, const int64_t *seeds, float *g, int64_t gsn,
                   int64_t gsh, int64_t gsw, int nthreads) {
    dropout_t drop = dropout_of(seeds);
    int ho = h / 2, wo = w / 2;
    FOR_WINDOWS_CHANNELS(n, h, w, C, {
        __m512 go = _mm512_maskz_loadu_ps(m, gout + img * sn + i * sh + j * sw + c);
        __m512i wi = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, win + (((int64_t)img * ho + i) * wo + j) * C + c));
        for (int k = 0; k < 4; k++) {
            int y = 2 * i + (k >> 1), x = 2 * j + (k & 1);
            __mmask16 at = _mm512_cmpeq_epi32_mask(wi, _mm512_set1_epi32(k));
            if (drop.on) at &= kept(drop, (((int64_t)img * h + y) * w + x) * C + c);
            _mm512_mask_storeu_ps(g + img * gsn + y * gsh + x * gsw + c, m, _mm512_maskz_mov_ps(at, go));
        }
    })
}

/* Backward of a 1x1 convolution with K <= 16 outputs (the classifier): gy is NCHW contiguous
 * (n, K, h, w); x and gx channels-last (gx[p, c] = sum_k gy[p, k] wk[k][c], written);
 * gw[k][c] = sum_p gy[p, k] x[p, c], gb[k] = sum_p gy[p, k] (double). */
void nerve_pointwise_bwd(const float *gy, int n, int h, int w, int K, const float *x, int64_t xsn,
                         int64_t xsh, int64_t xsw, int C, const float *wk, float *gx, int64_t gsn,
                         int64_t gsh, int64_t gsw, double *gw, double *gb, int nthreads) {
    int64_t hw = (int64_t)h * w;
    int team = nthreads > 64 ? 64 : nthreads;
    int64_t cp = (int64_t)cdiv(C, 16) * 16;
    /* per thread K x cp float accumulators per row, double totals */
    double *tot = (double *)calloc((size_t)team * (K * cp + K), sizeof(double));
    float *racc = (float *)aligned_alloc(64, (size_t)team * (K * cp + 16) * sizeof(float));
#pragma omp parallel num_threads(team)
    {
        int me = omp_get_thread_num();
        double *mt = tot + (int64_t)me * (K * cp + K);
        float *ra = racc + (int64_t)me * (K * cp + 16);
        int64_t lo, hi;
        share((int64_t)n * h, &lo, &hi);
        for (int64_t r = lo; r < hi; r++) {
            int img = (int)(r / h), y = (int)(r % h);
            memset(ra, 0, sizeof(float) * K * cp);
            float gsum[16] = {0};
            for (int x0 = 0; x0 < w; x0++) {
                float gk[16];
                for (int k = 0; k < K; k++) {
                    gk[k] = gy[((int64_t)img * K + k) * hw + (int64_t)y * w + x0];
                    gsum[k] += gk[k];
                }
                const float *xp = x + img * xsn + y * xsh + x0 * xsw;
                float *gp = gx + img * gsn + y * gsh + x0 * gsw;
                for (int c = 0; c < C; c += 16) {
                    __mmask16 m = lanes(C - c);
                    __m512 xv = _mm512_maskz_loadu_ps(m, xp + c);
                    __m512 acc = _mm512_setzero_ps();
                    for (int k = 0; k < K; k++) {
                        __m512 g = _mm512_set1_ps(gk[k]);
                        acc = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, wk + (int64_t)k * C + c), acc);
                        float *a = ra + (int64_t)k * cp + c;
                        _mm512_store_ps(a, _mm512_fmadd_ps(g, xv, _mm512_load_ps(a)));
                    }
                    _mm512_mask_storeu_ps(gp + c, m, acc);
                }
            }
            for (int k = 0; k < K; k++) {
                for (int64_t c = 0; c < C; c++) mt[k * cp + c] += ra[k * cp + c];
                mt[K * cp + k] += gsum[k];
            }
        }
    }
    for (int k = 0; k < K; k++) {
        for (int64_t c = 0; c < C; c++) {
            double s = 0;
            for (int t = 0; t < team; t++) s += tot[(int64_t)t * (K * cp + K) + k * cp + c];
            gw[(int64_t)k * C + c] = s;
        }
        double s = 0;
        for (int t = 0; t < team; t++) s += tot[(int64_t)t * (K * cp + K) + K * cp + k];
        gb[k] = s;
    }
    free(tot);
    free(racc);
}

/* ---------------------------------------------------------------- batch norm + ReLU passes */

#define FOR_PIXELS_CHANNELS(n, h, w, C, body)                                              \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                     \
    for (int64_t r = 0; r < (int64_t)(n) * (h); r++) {                                      \
        int img = (int)(r / (h)), y = (int)(r % (h));                                       \
        for (int x0 = 0; x0 < (w); x0++)                                                    \
            for (int c = 0; c < (C); c += 16) {                                             \
                __mmask16 m = lanes((C) - c);                                               \
                body                                                                        \
            }                                                                               \
    }

/* t = relu(scale * x + shift) per channel (channels-last strides). */
void nerve_bn_relu(const float *x, int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                   const float *scale, const float *shift, float *t, int64_t tsn, int64_t tsh,
                   int64_t tsw, int nthreads) {
    FOR_PIXELS_CHANNELS(n, h, w, C, {
        __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, scale + c),
                                   _mm512_maskz_loadu_ps(m, x + img * sn + y * sh + x0 * sw + c),
                                   _mm512_maskz_loadu_ps(m, shift + c));
        _mm512_mask_storeu_ps(t + img * tsn + y * tsh + x0 * tsw + c, m, _mm512_max_ps(v, _mm512_setzero_ps()));
    })
}

/* g = a * g + b * x + c0 per channel, in place (channels-last strides). */
void nerve_affine_combine_(float *g, int64_t gsn, int64_t gsh, int64_t gsw, const float *x,
                           int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                           const float *a, const float *b, const float *c0, int nthreads) {
    FOR_PIXELS_CHANNELS(n, h, w, C, {
        float *gp = g + img * gsn + y * gsh + x0 * gsw + c;
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, gp));
        v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + c),
                            _mm512_maskz_loadu_ps(m, x + img * sn + y * sh + x0 * sw + c), v);
        _mm512_mask_storeu_ps(gp, m, _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c0 + c)));
    })
}

/* ReLU backward of relu(scale * x + shift) in place: g = g where scale * x + shift > 0, else 0;
 * sums[c] = sum of the new g, sums[C + c] = sum of g * x (double). With g NULL: the sums of x
 * and of x^2 (scale and shift unused). */
void nerve_relu_grad_sums_(float *g, int64_t gsn, int64_t gsh, int64_t gsw, const float *x,
                           int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                           const float *scale, const float *shift, double *sums, int nthreads) {
    int team = nthreads > 64 ? 64 : nthreads;
    int64_t cp = (int64_t)cdiv(C, 16) * 16;
    double *tot = (double *)calloc((size_t)team * 2 * cp, sizeof(double));
    float *row = (float *)aligned_alloc(64, (size_t)team * 2 * cp * sizeof(float));
#pragma omp parallel num_threads(team)
    {
        int me = omp_get_thread_num();
        double *mt = tot + (int64_t)me * 2 * cp;
        float *s1 = row + (int64_t)me * 2 * cp, *s2 = s1 + cp;
        int64_t lo, hi;
        share((int64_t)n * h, &lo, &hi);
        for (int64_t r = lo; r < hi; r++) {
            int img = (int)(r / h), y = (int)(r % h);
            memset(s1, 0, sizeof(float) * 2 * cp);
            for (int x0 = 0; x0 < w; x0++) {
                float *gp = g ? g + img * gsn + y * gsh + x0 * gsw : NULL;
                const float *xp = x + img * sn + y * sh + x0 * sw;
                for (int c = 0; c < C; c += 16) {
                    __mmask16 m = lanes(C - c);
                    __m512 xv = _mm512_maskz_loadu_ps(m, xp + c), d = xv;
                    if (g) {
                        __mmask16 on = _mm512_mask_cmp_ps_mask(
                            m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, scale + c), xv, _mm512_maskz_loadu_ps(m, shift + c)),
                            _mm512_setzero_ps(), _CMP_GT_OQ);
                        d = _mm512_maskz_loadu_ps(on, gp + c);
                        _mm512_mask_storeu_ps(gp + c, m, d);
                    }
                    _mm512_store_ps(s1 + c, _mm512_add_ps(_mm512_load_ps(s1 + c), d));
                    _mm512_store_ps(s2 + c, _mm512_fmadd_ps(d, xv, _mm512_load_ps(s2 + c)));
                }
            }
            for (int64_t c = 0; c < C; c++) { mt[c] += s1[c]; mt[cp + c] += s2[c]; }
        }
    }
    for (int64_t c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int t = 0; t < team; t++) { a += tot[(int64_t)t * 2 * cp + c]; b += tot[(int64_t)t * 2 * cp + cp + c]; }
        sums[c] = a; sums[C + c] = b;
    }
    free(tot);
    free(row);
}

/* sums[c] = sum of x over (img, y, x), sums[C + c] = sum of x^2 (double; one pass). */
void nerve_channel_sums(const float *x, int64_t sn, int64_t sh, int64_t sw, int n, int h, int w, int C,
                        double *sums, int nthreads) {
    nerve_relu_grad_sums_(NULL, 0, 0, 0, x, sn, sh, sw, n, h, w, C, NULL, NULL, sums, nthreads);
}

/* ---------------------------------------------------------------- first convolution */

/* out[img, y, x, k] = b[k] + sum_{ky,kx} w[ky][kx][k] * in[img, y + ky - 1, x + kx - 1]
 * (3x3, zero padding, ONE input channel, contiguous (n, h, w) input; out channels-last
 * strides; w laid out [3][3][K]). */
void nerve_first_conv(const float *in, int n, int h, int w, int K, const float *wk, const float *b,
                      float *out, int64_t osn, int64_t osh, int64_t osw, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < (int64_t)n * h; r++) {
        int img = (int)(r / h), y = (int)(r % h);
        for (int x = 0; x < w; x++) {
            float *op = out + img * osn + y * osh + x * osw;
            for (int k = 0; k < K; k += 16) {
                __mmask16 m = lanes(K - k);
                __m512 acc = b ? _mm512_maskz_loadu_ps(m, b + k) : _mm512_setzero_ps();
                for (int ky = 0; ky < 3; ky++) {
                    int yy = y + ky - 1;
                    if (yy < 0 || yy >= h) continue;
                    for (int kx = 0; kx < 3; kx++) {
                        int xx = x + kx - 1;
                        if (xx < 0 || xx >= w) continue;
                        __m512 v = _mm512_set1_ps(in[((int64_t)img * h + yy) * w + xx]);
                        acc = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, wk + (ky * 3 + kx) * K + k), acc);
                    }
                }
                _mm512_mask_storeu_ps(op + k, m, acc);
            }
        }
    }
}

/* The weight and bias gradient of nerve_first_conv: dw[ky][kx][k] = sum g[img, y, x, k] *
 * in[img, y + ky - 1, x + kx - 1], db[k] = sum g (double; g channels-last strides). */
void nerve_first_conv_bwd(const float *in, int n, int h, int w, int K, const float *g, int64_t gsn,
                          int64_t gsh, int64_t gsw, double *dw, double *db, int nthreads) {
    int team = nthreads > 64 ? 64 : nthreads;
    int64_t kp = (int64_t)cdiv(K, 16) * 16;
    double *tot = (double *)calloc((size_t)team * 10 * kp, sizeof(double));
    float *row = (float *)aligned_alloc(64, (size_t)team * 10 * kp * sizeof(float));
#pragma omp parallel num_threads(team)
    {
        int me = omp_get_thread_num();
        double *mt = tot + (int64_t)me * 10 * kp;
        float *acc = row + (int64_t)me * 10 * kp;
        int64_t lo, hi;
        share((int64_t)n * h, &lo, &hi);
        for (int64_t r = lo; r < hi; r++) {
            int img = (int)(r / h), y = (int)(r % h);
            memset(acc, 0, sizeof(float) * 10 * kp);
            for (int x = 0; x < w; x++) {
                const float *gp = g + img * gsn + y * gsh + x * gsw;
                for (int k = 0; k < K; k += 16) {
                    __mmask16 m = lanes(K - k);
                    __m512 gv = _mm512_maskz_loadu_ps(m, gp + k);
                    for (int ky = 0; ky < 3; ky++) {
                        int yy = y + ky - 1;
                        if (yy < 0 || yy >= h) continue;
                        for (int kx = 0; kx < 3; kx++) {
                            int xx = x + kx - 1;
                            if (xx < 0 || xx >= w) continue;
                            float *a = acc + (ky * 3 + kx) * kp + k;
                            __m512 v = _mm512_set1_ps(in[((int64_t)img * h + yy) * w + xx]);
                            _mm512_store_ps(a, _mm512_fmadd_ps(v, gv, _mm512_load_ps(a)));
                        }
                    }
                    float *a = acc + 9 * kp + k;
                    _mm512_store_ps(a, _mm512_add_ps(gv, _mm512_load_ps(a)));
                }
            }
            for (int64_t i = 0; i < 10 * kp; i++) mt[i] += acc[i];
        }
    }
    for (int t = 0; t < 10; t++)
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int th = 0; th < team; th++) s += tot[(int64_t)th * 10 * kp + t * kp + k];
            if (t < 9) dw[t * K + k] = s; else db[k] = s;
        }
    free(tot);
    free(row);
}
