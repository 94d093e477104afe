/* Native kernels for the fused training step of aevb.engines.native (float32, CPU, row-major contiguous).
 *
 * Why C. On the paper's MNIST model a step in torch operations runs, besides the eleven matrix
 * products, about a hundred small operations (activations, the Bernoulli terms, the latent
 * layer of eqs. 7 and 10, bias sums), each a separate pass over memory and a separate dispatch:
 * together a large share of the step (measured: docs/performance.md, item 7).
 * Here each of those groups is one pass: an activation and its derivative, the Bernoulli
 * log-likelihood with its gradient, the whole reparameterised latent layer forwards and
 * backwards. The matrix products stay in torch (MKL/oneDNN).
 *
 * No libm: exp and log are the Cephes single-precision polynomials (relative error ~1e-7, as
 * accurate as float32 rounding), written so that the compiler vectorises the loops, and NaN
 * inputs stay NaN (the numeric guard of aevb.optimizers relies on that).
 *
 * Threads. Everything the kernels write is independent of the number of threads, bit for bit:
 * elementwise results, and every sum that feeds a gradient, a log-likelihood or a total (bias
 * gradients: the rows of a column in order; a row's log-likelihood: its elements in the order of
 * the compiled SIMD loop, fixed by the build, not by the threads; the sparse products: the
 * nonzeros or the rows in order; the latent layer and the double totals: one thread, in order).
 * Threads only split independent rows, columns or blocks.
 * Not so the sums of |.| that aevb_activation_forward, aevb_activation_backward, aevb_abs_sum
 * (and through it aevb_latent_forward) and aevb_sparse_rows return for the fused step's numeric
 * guard. Above 16384 elements they are OpenMP reductions: each thread sums its share and the
 * partial sums are combined in an order OpenMP leaves open (GCC's code adds them as the threads
 * arrive), so their last bits can differ between thread counts, and between runs on the same
 * count. They decide only whether a step is skipped, and for that the order rarely matters: their
 * terms are >= 0, so one NaN makes the sum NaN and one +inf (without a NaN) makes it +inf
 * whatever the order. But the order can matter when the sum is finite: a float32 sum of n terms
 * can round to +inf in one order and to a finite number in another when it lies within a relative
 * ~n * 2^-24 of FLT_MAX (3.4e38), and the guard's comparison with its limit (1e37, in
 * aevb.engines.native's NativeStep._gradients_finite) can come out either way when a bound lies that close to it. Both
 * happen only at values a diverging run reaches, and either verdict is safe (a step is taken
 * only when the bound proves every gradient finite), but there two thread counts can part:
 * one skips the step, the other takes it.
 */

#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define API __attribute__((visibility("default")))

static inline float fabs_f(float a) { return a < 0.0f ? -a : a; }
static inline float as_float(int32_t bits) { float f; memcpy(&f, &bits, sizeof f); return f; }
static inline int32_t as_int(float f) { int32_t bits; memcpy(&bits, &f, sizeof bits); return bits; }

/* 16 floats, and 16 int32 of the same bits, as GCC/Clang vector types: one AVX-512 register;
 * narrower ISAs split them. Loops whose lanes must stay apart use them directly (the compiler's
 * own SIMD would reduce the lanes across the vector at every block). */
typedef float vec16 __attribute__((vector_size(64)));
typedef int32_t ivec16 __attribute__((vector_size(64)));

static inline vec16 load16(const float *p) { vec16 v; memcpy(&v, p, sizeof v); return v; }
static inline void store16(float *p, vec16 v) { memcpy(p, &v, sizeof v); }
static inline vec16 splat16(float value) { return (vec16){0} + value; }
static inline vec16 abs16(vec16 a) { return (vec16)((ivec16)a & 0x7fffffff); }

/* The elementary functions below are written once for a float and for a vec16, lane by lane the
 * same operations: a comparison gives 0/1 on a float and 0/-1 masks on a vector, and these pick
 * the matching select, bit casts and broadcast. */
static inline float select1(int condition, float a, float b) { return condition ? a : b; }
static inline vec16 select16(ivec16 mask, vec16 a, vec16 b) {    /* lanes of a where mask, else of b */
    return (vec16)(((ivec16)a & mask) | ((ivec16)b & ~mask));
}
static inline ivec16 bits16(vec16 v) { return (ivec16)v; }
static inline vec16 floats16(ivec16 bits) { return (vec16)bits; }
static inline float splat1(float value) { return value; }
#define SELECT(condition, a, b) _Generic((a), float: select1, vec16: select16)((condition), (a), (b))
#define BITS(v) _Generic((v), float: as_int, vec16: bits16)(v)
#define FLOATS(bits) _Generic((bits), int32_t: as_float, ivec16: floats16)(bits)
#define SPLAT_LIKE(like, value) _Generic((like), float: splat1, vec16: splat16)(value)

/* exp(x) for x <= 0 (all callers need only that range): Cody-Waite reduction x = n ln 2 + r,
 * a degree-6 polynomial for e^r on |r| <= ln2/2, and 2^n put into the exponent. Below -87.3
 * the result is held at 2^-126 (~1e-38), where every caller's answer is exact to float. */
#define DEFINE_EXP_NONPOSITIVE(name, T)                                                            \
    static inline T name(T x) {                                                                    \
        const T lowest = SPLAT_LIKE(x, -87.3365448f);                                              \
        const T shifter = SPLAT_LIKE(x, 12582912.0f);  /* 1.5 * 2^23: adding it rounds to an integer */ \
        x = SELECT(x < lowest, lowest, x);             /* a NaN compares false and stays NaN */    \
        T t = x * 1.44269504088896341f + shifter;                                                  \
        T nf = t - shifter;                                                                        \
        T r = x - nf * 0.693359375f;                                                               \
        r = r - nf * -2.12194440e-4f;                                                              \
        T p = SPLAT_LIKE(x, 1.9875691500e-4f);                                                     \
        p = p * r + 1.3981999507e-3f;                                                              \
        p = p * r + 8.3334519073e-3f;                                                              \
        p = p * r + 4.1665795894e-2f;                                                              \
        p = p * r + 1.6666665459e-1f;                                                              \
        p = p * r + 5.0000001201e-1f;                                                              \
        p = p * r * r + r + 1.0f;                                                                  \
        return p * FLOATS((BITS(t) - BITS(shifter) + 127) << 23);                                  \
    }
DEFINE_EXP_NONPOSITIVE(exp_nonpositive, float)
DEFINE_EXP_NONPOSITIVE(exp_nonpositive16, vec16)

/* log(u) for u in [1, 2] (Cephes logf's polynomial after reducing to [sqrt(1/2), sqrt(2)]). */
#define DEFINE_LOG_ONE_TO_TWO(name, T)                                                             \
    static inline T name(T u) {                                                                    \
        const T one = SPLAT_LIKE(u, 1.0f), zero = SPLAT_LIKE(u, 0.0f);                             \
        T f = SELECT(u > 1.41421356f, 0.5f * u, u) - 1.0f;                                         \
        T e = SELECT(u > 1.41421356f, one, zero);                                                  \
        T z = f * f;                                                                               \
        T y = SPLAT_LIKE(u, 7.0376836292e-2f);                                                     \
        y = y * f - 1.1514610310e-1f;                                                              \
        y = y * f + 1.1676998740e-1f;                                                              \
        y = y * f - 1.2420140846e-1f;                                                              \
        y = y * f + 1.4249322787e-1f;                                                              \
        y = y * f - 1.6668057665e-1f;                                                              \
        y = y * f + 2.0000714765e-1f;                                                              \
        y = y * f - 2.4999993993e-1f;                                                              \
        y = y * f + 3.3333331174e-1f;                                                              \
        y = y * f * z;                                                                             \
        y += e * -2.12194440e-4f;                                                                  \
        y -= 0.5f * z;                                                                             \
        return f + y + e * 0.693359375f;                                                           \
    }
DEFINE_LOG_ONE_TO_TWO(log_one_to_two, float)
DEFINE_LOG_ONE_TO_TWO(log_one_to_two16, vec16)

/* log(1 + t) for t in [0, 1], accurate also for tiny t (Goldberg: log(u) * t / (u - 1), u = 1 + t). */
static inline float log1p_unit(float t) {
    float u = 1.0f + t;
    float d = u - 1.0f;
    float l = log_one_to_two(u);
    return d == 0.0f ? t : l * (t / d);
}

/* softplus(a) = log(1 + e^a) and sigmoid(a), sharing e^-|a|. */
static inline float softplus_sigmoid(float a, float *sigmoid) {
    float m = a < 0.0f ? -a : a;
    float e = exp_nonpositive(-m);
    float inv = 1.0f / (1.0f + e);
    *sigmoid = a >= 0.0f ? inv : e * inv;
    return (a > 0.0f ? a : 0.0f) + log1p_unit(e);
}

static inline float sigmoid_of(float a) { float s; softplus_sigmoid(a, &s); return s; }
static inline float softplus_of(float a) { float s; return softplus_sigmoid(a, &s); }

/* tanh for evaluation: (1 - t) / (1 + t) with t = e^-2|a|, to an absolute error below 1.2e-7 at
 * every a (tests/test_native.py), below the error of the matrix product that feeds it;
 * tanh_f below spends another polynomial on relative accuracy near 0, which training's gradients
 * and the reference comparisons of the training kernels are held to. */
static inline float tanh_absolute(float a) {
    float t = exp_nonpositive(-2.0f * fabs_f(a));
    float v = (1.0f - t) / (1.0f + t);
    return a < 0.0f ? -v : v;
}

static inline float tanh_f(float a) {
    /* |a| < 0.625: Cephes' odd polynomial (no cancellation near 0); else 1 - 2/(e^{2|a|} + 1). */
    float m = a < 0.0f ? -a : a;
    float z = a * a;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * a + a;
    float t = exp_nonpositive(-2.0f * m);
    float large = (1.0f - t) / (1.0f + t);
    large = a < 0.0f ? -large : large;
    return m < 0.625f ? small : large;
}

enum { ACT_NONE = 0, ACT_TANH = 1, ACT_RELU = 2, ACT_SIGMOID = 3, ACT_SOFTPLUS = 4 };

/* out[i] = act(pre[i]); n elements (out may be pre). Returns sum |out[i]| (NaN or inf if any is),
 * which the fused step's numeric guard uses to bound the weight gradients computed from out
 * (an OpenMP reduction: its last bits may depend on the threads, see the header). */
API double aevb_activation_forward(const float *pre, float *out, int64_t n, int act) {
    int64_t i;
    float total = 0.0f;
    switch (act) {
    case ACT_TANH:
#pragma omp parallel for simd schedule(static) reduction(+:total) if (parallel: n > 16384)
        for (i = 0; i < n; i++) { out[i] = tanh_f(pre[i]); total += fabs_f(out[i]); }
        break;
    case ACT_RELU:
#pragma omp parallel for simd schedule(static) reduction(+:total) if (parallel: n > 16384)
        for (i = 0; i < n; i++) {
            out[i] = pre[i] > 0.0f ? pre[i] : (pre[i] != pre[i] ? pre[i] : 0.0f);
            total += out[i];
        }
        break;
    case ACT_SIGMOID:
#pragma omp parallel for simd schedule(static) reduction(+:total) if (parallel: n > 16384)
        for (i = 0; i < n; i++) { float s; softplus_sigmoid(pre[i], &s); out[i] = s; total += s; }
        break;
    case ACT_SOFTPLUS:
#pragma omp parallel for simd schedule(static) reduction(+:total) if (parallel: n > 16384)
        for (i = 0; i < n; i++) { float s; out[i] = softplus_sigmoid(pre[i], &s); total += out[i]; }
        break;
    default:
        if (out != pre) memcpy(out, pre, (size_t)n * sizeof(float));
#pragma omp parallel for simd schedule(static) reduction(+:total) if (parallel: n > 16384)
        for (i = 0; i < n; i++) total += fabs_f(out[i]);
    }
    return total;
}

/* sum |a[i]| over n elements (NaN or inf if any is); an OpenMP reduction, as above. */
API double aevb_abs_sum(const float *a, int64_t n) {
    int64_t i;
    float total = 0.0f;
#pragma omp parallel for simd schedule(static) reduction(+:total) if (parallel: n > 16384)
    for (i = 0; i < n; i++) total += fabs_f(a[i]);
    return total;
}

/* grad (rows x cols) *= act'(pre, out) in place, and bias_grad[c] = sum over rows of the result
 * (rows summed in order, so the value does not depend on the number of threads). Returns the sum
 * of |grad| after the product, for the numeric guard (the blocks' sums combined by an OpenMP
 * reduction: its last bits may depend on the threads, see the header). */
API double aevb_activation_backward(float *grad, const float *pre, const float *out, int64_t rows,
                                    int64_t cols, int act, float *bias_grad) {
    const int64_t block = 64;
    int64_t blocks = (cols + block - 1) / block, b;
    float total = 0.0f;
#pragma omp parallel for schedule(static) reduction(+:total) if (rows * cols > 16384)
    for (b = 0; b < blocks; b++) {
        int64_t c0 = b * block, c1 = c0 + block < cols ? c0 + block : cols, r, c;
        float acc[64], mag[64];
        for (c = 0; c < c1 - c0; c++) acc[c] = mag[c] = 0.0f;
        for (r = 0; r < rows; r++) {
            float *g = grad + r * cols;
            const float *a = pre + r * cols, *h = out + r * cols;
            switch (act) {
            case ACT_TANH:
#pragma omp simd
                for (c = c0; c < c1; c++) { g[c] *= 1.0f - h[c] * h[c]; acc[c - c0] += g[c]; mag[c - c0] += fabs_f(g[c]); }
                break;
            case ACT_RELU:
#pragma omp simd
                for (c = c0; c < c1; c++) {
                    g[c] = a[c] > 0.0f ? g[c] : 0.0f * g[c];
                    acc[c - c0] += g[c];
                    mag[c - c0] += fabs_f(g[c]);
                }
                break;
            case ACT_SIGMOID:
#pragma omp simd
                for (c = c0; c < c1; c++) { g[c] *= h[c] * (1.0f - h[c]); acc[c - c0] += g[c]; mag[c - c0] += fabs_f(g[c]); }
                break;
            case ACT_SOFTPLUS:
#pragma omp simd
                for (c = c0; c < c1; c++) {
                    float s;
                    softplus_sigmoid(a[c], &s);
                    g[c] *= s;
                    acc[c - c0] += g[c];
                    mag[c - c0] += fabs_f(g[c]);
                }
                break;
            default:
#pragma omp simd
                for (c = c0; c < c1; c++) { acc[c - c0] += g[c]; mag[c - c0] += fabs_f(g[c]); }
            }
        }
        for (c = c0; c < c1; c++) { bias_grad[c] = acc[c - c0]; total += mag[c - c0]; }
    }
    return total;
}

/* The Bernoulli decoder (eq. 11 of App. C) for L samples of M points: logits (L*M x D), x (M x D).
 * log_lik[l*M + i] = sum_d x*l - softplus(l) (nats); logits are overwritten with
 * scale * (sigmoid(l) - x), the loss gradient when scale = w (the weight of each term in -loss).
 * Returns the sum of log_lik over all rows (in double). */
API double aevb_bernoulli(float *logits, const float *x, int64_t samples, int64_t points, int64_t dim,
                          float scale, float *log_lik) {
    int64_t rows = samples * points, r;
    double sum = 0.0;
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
    for (r = 0; r < rows; r++) {
        float *l = logits + r * dim;
        const float *xr = x + (r % points) * dim;
        float total = 0.0f;
        int64_t d;
#pragma omp simd reduction(+:total)
        for (d = 0; d < dim; d++) {
            float s, sp = softplus_sigmoid(l[d], &s);
            total += xr[d] * l[d] - sp;
            l[d] = scale * (s - xr[d]);
        }
        log_lik[r] = total;
    }
    for (r = 0; r < rows; r++) sum += log_lik[r];        /* in order: independent of the threads */
    return sum;
}

/* e^x for any x (float): e^-|x| inverted for x > 0; +inf beyond float's range, NaN stays NaN. */
static inline float exp_any(float x) {
    if (x <= 0.0f) return exp_nonpositive(x);
    return x > 88.7228391f ? INFINITY : 1.0f / exp_nonpositive(-x);
}

/* One row of aevb_gaussian. Inlined with constant flags at each call below, so that every
 * combination is its own simple loop: with the flags tested inside one loop, GCC unswitched it
 * into versions and vectorised only one of them. */
static inline __attribute__((always_inline)) float gaussian_row(const float *o, const float *raw, const float *xr,
                                                                float *g, float *g_var, int64_t dim, float bound,
                                                                const int bounded, const int sigmoid_mean,
                                                                const int shared) {
    const float half_log_two_pi = 0.918938533204672742f;
    float total = 0.0f;
    int64_t d;
#pragma omp simd reduction(+:total)
    for (d = 0; d < dim; d++) {
        float squashed = bounded ? tanh_f(raw[d] / bound) : 0.0f;
        float log_var = bounded ? bound * squashed : raw[d];
        float mean = sigmoid_mean ? sigmoid_of(o[d]) : o[d];
        float residual = xr[d] - mean;
        float scaled = residual * exp_any(-log_var);                     /* (x - mean) / sigma^2 */
        total += -0.5f * (residual * scaled) - 0.5f * log_var - half_log_two_pi;
        float var_gradient = 0.5f * (scaled * residual - 1.0f);         /* d log p / d log sigma^2 */
        g[d] = sigmoid_mean ? scaled * (mean * (1.0f - mean)) : scaled;
        g_var[d] = (bounded && !shared) ? var_gradient * (1.0f - squashed * squashed) : var_gradient;
    }
    return total;
}

/* The Gaussian decoder (App. C.2) for L samples of M points: out (L*M x 2D) = [mean, raw log sigma^2]
 * per row, or (L*M x D) = the mean's input alone with a per-dimension raw log sigma^2 shared_raw (D);
 * x (M x D). The mean is sigmoid(out) when sigmoid_mean (Frey Face, §5), and log sigma^2 =
 * B tanh(raw/B) for bound B > 0 (raw itself for B = 0). Writes, per row r:
 * log_lik[r] = sum_d -(log 2pi + log sigma^2 + (x - mean)^2 / sigma^2) / 2 (nats), in the order of
 * the compiled SIMD loop; grad (L*M x 2D or D) the gradient of log_lik with respect to out (through
 * the sigmoid and the bound); with shared_raw, grad_log_var (L*M x D) the gradient with respect
 * to log sigma^2 itself (the caller sums it over rows). Rows are split among threads, so nothing
 * depends on their number. Returns the sum of log_lik over all rows (in double, in order). */
API double aevb_gaussian(const float *out, const float *x, int64_t samples, int64_t points, int64_t dim,
                         float bound, int sigmoid_mean, const float *shared_raw, float *grad,
                         float *grad_log_var, float *log_lik) {
    int64_t rows = samples * points, width = shared_raw ? dim : 2 * dim, r;
    double sum = 0.0;
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
    for (r = 0; r < rows; r++) {
        const float *o = out + r * width, *raw = shared_raw ? shared_raw : o + dim;
        const float *xr = x + (r % points) * dim;
        float *g = grad + r * width, *g_var = shared_raw ? grad_log_var + r * dim : g + dim;
        int variant = (bound > 0.0f) * 4 + (sigmoid_mean != 0) * 2 + (shared_raw != 0);
        float total;
        switch (variant) {   /* each call a loop of its own (gaussian_row) */
        case 0: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 0, 0, 0); break;
        case 1: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 0, 0, 1); break;
        case 2: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 0, 1, 0); break;
        case 3: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 0, 1, 1); break;
        case 4: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 1, 0, 0); break;
        case 5: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 1, 0, 1); break;
        case 6: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 1, 1, 0); break;
        default: total = gaussian_row(o, raw, xr, g, g_var, dim, bound, 1, 1, 1); break;
        }
        log_lik[r] = total;
    }
    for (r = 0; r < rows; r++) sum += log_lik[r];        /* in order: independent of the threads */
    return sum;
}

/* The Bernoulli log-likelihood of evaluation keeps 16 lanes apart along a row (element d in lane
 * d % 16, one vector register on AVX-512) and combines them once at the row's end: a reduction
 * across the vector and a logarithm cost tens of cycles of latency, which per block of elements
 * took longer than the block's exponentials. Each lane multiplies at most LANE_FACTORS factors
 * 1 + e^-|a| in (1, 2] before its logarithm is taken, so a product stays below 2^112, short of
 * float overflow (2^128). */
#define LANE_FACTORS 112

/* Adds the binary exponents of the 16 products to *exponents (exact) and returns the logarithms
 * of their mantissas (NaN for a NaN product), lane by lane; the products are reset to 1. */
static inline vec16 fold_lane_logs(vec16 *product, int64_t *exponents) {
    ivec16 bits = (ivec16)*product;
    ivec16 exponent = ((bits >> 23) & 0xff) - 127;
    vec16 mantissa = (vec16)((bits & 0x007fffff) | 0x3f800000);          /* in [1, 2) */
    int j;
    for (j = 0; j < 16; j++) *exponents += exponent[j];
    vec16 logs = select16(*product == *product, log_one_to_two16(mantissa), *product);   /* a NaN stays */
    *product = splat16(1.0f);
    return logs;
}

/* The same log-likelihoods without the gradient (evaluation: importance sampling decodes many z),
 * with the output layer's bias added here (the matrix product leaves it out: adding it there costs
 * a pass over the output). Per row, sum_d x*a - softplus(a) with a = logits + bias, and
 * softplus(a) = max(a, 0) + log(1 + e^-|a|): the logarithm is taken of products of the factors
 * 1 + e^-|a| (lane by lane, at the row's end or every LANE_FACTORS of them), so a row costs D
 * exponentials and 16 logarithms per 1,792 elements instead of D of each. The rounding of 1 + e^-|a|
 * (which loses e^-|a| < 2^-24 entirely) is carried beside the product and added back
 * (log(f + r) = log f + r / f, r/f taken as r: |r| < 2^-25), the exponents are summed as integers
 * and the lanes in double: the result is as accurate as the per-element form (tests/test_native.py). */
API void aevb_bernoulli_log_lik(const float *logits, const float *bias, const float *x, int64_t samples,
                                int64_t points, int64_t dim, float *log_lik) {
    int64_t rows = samples * points, r;
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
    for (r = 0; r < rows; r++) {
        const float *l = logits + r * dim;
        const float *xr = x + (r % points) * dim;
        vec16 product = splat16(1.0f), linear = splat16(0.0f), lost = splat16(0.0f), logs = splat16(0.0f);
        int64_t exponents = 0, full = dim - dim % 16, d, factors = 0;
        double total = 0.0;
        int j;
        for (d = 0; d < full; d += 16) {
            vec16 a = load16(l + d) + load16(bias + d);
            vec16 e = exp_nonpositive16(-abs16(a));
            vec16 f = 1.0f + e;
            product *= f;
            lost += e - (f - 1.0f);                    /* exact: the rounding of 1 + e */
            linear += load16(xr + d) * a - select16(a > 0.0f, a, splat16(0.0f));
            if (++factors == LANE_FACTORS) {
                logs += fold_lane_logs(&product, &exponents);
                factors = 0;
            }
        }
        for (d = full; d < dim; d++) {                  /* the last dim % 16 elements, a lane each */
            float a = l[d] + bias[d];
            float e = exp_nonpositive(-fabs_f(a));
            float f = 1.0f + e;
            j = (int)(d - full);
            product[j] *= f;
            lost[j] += e - (f - 1.0f);
            linear[j] += xr[d] * a - (a > 0.0f ? a : 0.0f);
        }
        logs += fold_lane_logs(&product, &exponents);
        for (j = 0; j < 16; j++) total += (double)linear[j] - (double)lost[j] - (double)logs[j];
        log_lik[r] = (float)(total - (double)exponents * 0.69314718055994530942);
    }
}

/* h = act(h + bias) in place, rows x cols, bias (cols): a hidden layer's output for evaluation
 * (the matrix product leaves the bias out, as above). */
#define BIAS_ACTIVATION_LOOP(expression)                                                          \
    _Pragma("omp parallel for schedule(static) if (rows * cols > 16384)")                         \
    for (r = 0; r < rows; r++) {                                                                   \
        float *row = h + r * cols;                                                                 \
        int64_t c;                                                                                 \
        _Pragma("omp simd")                                                                        \
        for (c = 0; c < cols; c++) { float a = row[c] + bias[c]; row[c] = (expression); }         \
    }

API void aevb_bias_activation(float *h, const float *bias, int64_t rows, int64_t cols, int act) {
    int64_t r;
    switch (act) {
    case ACT_TANH: BIAS_ACTIVATION_LOOP(tanh_absolute(a)) break;
    case ACT_RELU: BIAS_ACTIVATION_LOOP(a > 0.0f ? a : (a != a ? a : 0.0f)) break;
    case ACT_SIGMOID: BIAS_ACTIVATION_LOOP(sigmoid_of(a)) break;
    case ACT_SOFTPLUS: BIAS_ACTIVATION_LOOP(softplus_of(a)) break;
    default: BIAS_ACTIVATION_LOOP(a) break;
    }
}

/* rows of m (rows x cols) times weight[row]. */
API void aevb_scale_rows(float *m, const float *weight, int64_t rows, int64_t cols) {
    int64_t r;
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
    for (r = 0; r < rows; r++) {
        float w = weight[r];
        int64_t c;
#pragma omp simd
        for (c = 0; c < cols; c++) m[r * cols + c] *= w;
    }
}

static inline float bounded(float raw, float bound, float *through) {
    /* log sigma^2 = B tanh(raw / B) and its derivative 1 - (log sigma^2 / B)^2; B = 0: unbounded. */
    if (bound <= 0.0f) { *through = 1.0f; return raw; }
    float v = bound * tanh_f(raw / bound);
    float q = v / bound;
    *through = 1.0f - q * q;
    return v;
}

/* The Gaussian posterior's reparameterised layer (section 2.4): heads (M x 2J) = [mu, raw log sigma^2],
 * eps (L x M x J) -> z (L x M x J), std and log_var (M x J), and per datapoint (B) the closed-form
 * KL (App. B) into term[i], or per sample (A, IWAE) log p(z) - log q(z|x) into term[l*M + i].
 * *term_total = the sum of term, in order. Returns sum |z| for the numeric guard (aevb_abs_sum). */
API double aevb_latent_forward(const float *heads, const float *eps, int64_t samples, int64_t points,
                               int64_t latent, float bound, int closed_form_kl, float *z, float *std,
                               float *log_var, float *term, double *term_total) {
    int64_t i, j, l;
    for (i = 0; i < points; i++) {
        float kl = 0.0f, log_var_sum = 0.0f;
        for (j = 0; j < latent; j++) {
            float mean = heads[i * 2 * latent + j], through;
            float lv = bounded(heads[i * 2 * latent + latent + j], bound, &through);
            float half = 0.5f * lv, e = exp_nonpositive(half > 0.0f ? -half : half);
            float sd = half > 0.0f ? 1.0f / e : e;                /* exp(lv / 2) */
            log_var[i * latent + j] = lv;
            std[i * latent + j] = sd;
            kl += 0.5f * (mean * mean + sd * sd - lv - 1.0f);
            log_var_sum += lv;
            for (l = 0; l < samples; l++) {
                int64_t k = (l * points + i) * latent + j;
                z[k] = mean + sd * eps[k];
            }
        }
        if (closed_form_kl) { term[i] = kl; continue; }
        for (l = 0; l < samples; l++) {
            float prior = 0.0f, posterior = 0.0f;
            for (j = 0; j < latent; j++) {
                int64_t k = (l * points + i) * latent + j;
                prior += z[k] * z[k];
                posterior += eps[k] * eps[k];
            }
            /* log p(z) - log q(z|x) = -1/2 |z|^2 + 1/2 |eps|^2 + 1/2 sum log sigma^2 */
            term[l * points + i] = -0.5f * prior + 0.5f * posterior + 0.5f * log_var_sum;
        }
    }
    double total = 0.0;
    for (i = 0; i < (closed_form_kl ? points : samples * points); i++) total += term[i];
    *term_total = total;
    return aevb_abs_sum(z, samples * points * latent);
}

/* Gradient of the loss -sum w * bound terms with respect to the heads (M x 2J), given
 * grad_z = d loss / d z (L x M x J) from the decoder. weight: per (l, i) weights of the
 * self-normalised IWAE estimator (already divided by M), or NULL for uniform 1/(L M) (A, B).
 * closed_form_kl: estimator B (KL of App. B); else A/IWAE (log p(z) and the entropy along the path).
 * (The heads layer's backward sums |grad_heads| for the numeric guard.) */
API void aevb_latent_backward(float *grad_z, const float *eps, const float *z, const float *std,
                              const float *log_var, const float *heads, int64_t samples, int64_t points,
                              int64_t latent, float bound, int closed_form_kl, const float *weight,
                              float *grad_heads) {
    int64_t i, j, l;
    float uniform = 1.0f / (float)(samples * points), per_point = 1.0f / (float)points;
    for (i = 0; i < points; i++) {
        for (j = 0; j < latent; j++) {
            float gm = 0.0f, glv = 0.0f;
            for (l = 0; l < samples; l++) {
                int64_t k = (l * points + i) * latent + j;
                float g = grad_z[k];
                if (!closed_form_kl) g += (weight ? weight[l * points + i] : uniform) * z[k];  /* -log p(z) */
                gm += g;
                glv += g * eps[k];
            }
            float sd = std[i * latent + j], lv = log_var[i * latent + j];
            glv *= 0.5f * sd;                                        /* dz/dlog sigma^2 = 1/2 sigma eps */
            if (closed_form_kl) {
                gm += heads[i * 2 * latent + j] * per_point;          /* dKL/dmu = mu */
                glv += 0.5f * (sd * sd - 1.0f) * per_point;           /* dKL/dlog sigma^2 */
            } else {
                glv -= 0.5f * per_point;                              /* entropy of q along the path */
            }
            float through = bound > 0.0f ? 1.0f - (lv / bound) * (lv / bound) : 1.0f;
            grad_heads[i * 2 * latent + j] = gm;
            grad_heads[i * 2 * latent + latent + j] = glv * through;
        }
    }
}

/* One Adagrad step (Duchi et al. 2011; section 5) on n parameters, in the arithmetic of
 * torch.optim.Adagrad's fused CPU kernel (the same operations in the same order, contracted into
 * FMAs as the compiler contracts torch's), so that either continues the other's state:
 * step += 1;  clr = lr / (1 + (step - 1) lr_decay);  g' = g + wd p;  s += g' g';
 * p -= clr g' / (sqrt(s) + eps). step is the optimiser's float32 step count. */
API void aevb_adagrad(float *param, const float *grad, float *state_sum, int64_t n, float *step, double lr,
                      double lr_decay, float weight_decay, float eps) {
    int64_t i;
    *step += 1.0f;
    const float clr = (float)(lr / (1.0 + ((double)*step - 1.0) * lr_decay));
    if (weight_decay != 0.0f) {
#pragma omp parallel for simd schedule(static) if (parallel: n > 16384)
        for (i = 0; i < n; i++) {
            float g = grad[i] + param[i] * weight_decay;
            float s = state_sum[i] + g * g;
            state_sum[i] = s;
            param[i] = param[i] - clr * g / (__builtin_sqrtf(s) + eps);
        }
    } else {
#pragma omp parallel for simd schedule(static) if (parallel: n > 16384)
        for (i = 0; i < n; i++) {
            float g = grad[i];
            float s = state_sum[i] + g * g;
            state_sum[i] = s;
            param[i] = param[i] - clr * g / (__builtin_sqrtf(s) + eps);
        }
    }
}

/* One Adam step (Kingma & Ba 2015) on n parameters, in the arithmetic of torch.optim.Adam's fused
 * CPU kernel on one thread, so that either continues the other's state. step += 1 (the
 * optimiser's float32 step count); the bias corrections and step size in double, then in float32:
 *   g' = g + wd p,  m = m + (1 - b1)(g' - m)  (torch's lerp),  v = b2 v + (1 - b2) g'^2,
 *   p -= (lr / (1 - b1^step)) m / (sqrt(v) / sqrt(1 - b2^step) + eps).
 * torch runs the first n - n % width elements in vectors and the rest as scalars, which its
 * compiler contracts into different FMAs; the explicit fmaf calls below are those contractions. */
static inline float adam_lerp(float m, float g, float weight) {
    return fabs_f(weight) < 0.5f ? __builtin_fmaf(weight, g - m, m) : __builtin_fmaf(-(g - m), 1.0f - weight, g);
}

API void aevb_adam(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, int64_t n, float *step,
                   double lr, double beta1, double beta2, double weight_decay, double eps, int64_t width) {
    int64_t i;
    *step += 1.0f;
    const double count = (double)(int64_t)*step;
    const float size = (float)(lr / (1.0 - pow(beta1, count)));
    const float root = (float)sqrt(1.0 - pow(beta2, count));
    const float b2 = (float)beta2, keep1 = (float)(1.0 - beta1), keep2 = (float)(1.0 - beta2);
    const float wd = (float)weight_decay, e = (float)eps;
    const int64_t vector_end = width > 1 ? n - n % width : n;
    /* (elementwise: the threads' shares give the same numbers as one thread) */
#pragma omp parallel for simd schedule(static) if (parallel: vector_end > 16384)
    for (i = 0; i < vector_end; i++) {
        const float g = weight_decay != 0.0 ? __builtin_fmaf(param[i], wd, grad[i]) : grad[i];
        const float m = adam_lerp(exp_avg[i], g, keep1);
        const float v = __builtin_fmaf(keep2 * g, g, exp_avg_sq[i] * b2);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = param[i] - size * m / (__builtin_sqrtf(v) / root + e);
    }
    for (i = vector_end; i < n; i++) {
        const float g = weight_decay != 0.0 ? __builtin_fmaf(param[i], wd, grad[i]) : grad[i];
        const float m = adam_lerp(exp_avg[i], g, keep1);
        const float v = __builtin_fmaf(exp_avg_sq[i], b2, keep2 * g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = param[i] - size * m / (__builtin_sqrtf(v) / root + e);
    }
}

/* ---- Sparse inputs: the first layer of the encoder on data that are mostly zeros (MNIST: 80-87%).
 * x W^T and the weight gradient G^T x then cost a multiply-add per nonzero of x and output unit
 * instead of per element, far less than the dense products at MNIST's density (measured:
 * docs/performance.md, item 9). W stays in
 * nn.Linear's (out, in) layout; blocks of 64 output units are transposed into a per-thread tile
 * (in x 64, in L2), so the inner loops run over 64 contiguous floats. */

#define SPARSE_BLOCK 64

/* The nonzeros of each row of x (rows x dim): row r's in index/value[r*stride ...] (count[r] of
 * them, in column order; stride >= dim + 16, the vector path stores 16 at a time). Returns
 * sum |x| (NaN or inf if any element is) for the numeric guard, an OpenMP reduction whose last
 * bits may depend on the threads (see the header); *nonzeros = sum of count (exact). */
API double aevb_sparse_rows(const float *x, int64_t rows, int64_t dim, int64_t stride, int32_t *index,
                            float *value, int64_t *count, int64_t *nonzeros) {
    int64_t r, total = 0;
    float magnitude = 0.0f;
#pragma omp parallel for schedule(static) reduction(+:magnitude, total) if (rows * dim > 16384)
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        int32_t *ir = index + r * stride;
        float *vr = value + r * stride, row_magnitude = 0.0f;
        int64_t n = 0, d = 0;
#if defined(__AVX512F__)
        /* compress in registers and store 16 lanes (the rest is overwritten or past the row's
         * count): the memory form of vcompressps is microcoded and slow on some CPUs */
        const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        __m512 sum = _mm512_setzero_ps();
        for (; d + 16 <= dim; d += 16) {
            __m512 v = _mm512_loadu_ps(xr + d);
            __mmask16 keep = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);   /* NaN is kept */
            __m512i columns = _mm512_add_epi32(_mm512_set1_epi32((int)d), lanes);
            _mm512_storeu_ps(vr + n, _mm512_maskz_compress_ps(keep, v));
            _mm512_storeu_si512((void *)(ir + n), _mm512_maskz_compress_epi32(keep, columns));
            n += __builtin_popcount((unsigned)keep);
            sum = _mm512_add_ps(sum, _mm512_abs_ps(v));
        }
        row_magnitude = _mm512_reduce_add_ps(sum);
#endif
        for (; d < dim; d++) {                    /* branch-free compaction */
            ir[n] = (int32_t)d;
            vr[n] = xr[d];
            n += xr[d] != 0.0f;
            row_magnitude += fabs_f(xr[d]);
        }
        count[r] = n;
        total += n;
        magnitude += row_magnitude;
    }
    *nonzeros = total;
    return magnitude;
}

/* dst[i][j] = src[j][i] for a 16 x 16 block (row strides in floats). */
static inline void transpose16(const float *src, int64_t src_stride, float *dst, int64_t dst_stride) {
#if defined(__AVX512F__)
    __m512 r[16], t[16];
    int i;
    for (i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * src_stride);
    for (i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (i = 0; i < 16; i += 8) {
        int k;
        for (k = 0; k < 4; k++) {
            t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
            t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xDD);
        }
    }
    for (i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
    for (i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * dst_stride, r[i]);
#else
    int i, j;
    for (i = 0; i < 16; i++)
        for (j = 0; j < 16; j++) dst[i * dst_stride + j] = src[j * src_stride + i];
#endif
}

/* dst[i][j] = src[j][i] for i < rows, j < cols (a block of W or of a gradient), 16 x 16 at a time. */
static void transpose_block(const float *src, int64_t src_stride, float *dst, int64_t dst_stride,
                            int64_t rows, int64_t cols) {
    int64_t i0, j0, i, j;
    for (j0 = 0; j0 < cols; j0 += 16)
        for (i0 = 0; i0 < rows; i0 += 16) {
            if (i0 + 16 <= rows && j0 + 16 <= cols) {
                transpose16(src + j0 * src_stride + i0, src_stride, dst + i0 * dst_stride + j0, dst_stride);
                continue;
            }
            for (j = j0; j < cols && j < j0 + 16; j++)
                for (i = i0; i < rows && i < i0 + 16; i++) dst[i * dst_stride + j] = src[j * src_stride + i];
        }
}

static int sparse_threads(int scratch_threads) {
#ifdef _OPENMP
    int wanted = omp_get_max_threads();
    return wanted < scratch_threads ? wanted : scratch_threads;
#else
    (void)scratch_threads;
    return 1;
#endif
}

static inline int thread_number(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* out (rows x out_f) = x W^T + bias for x in aevb_sparse_rows' form (same stride); W (out_f x in_f).
 * scratch: scratch_threads * in_f * 64 floats. Each output is summed over x's nonzeros in order. */
API void aevb_sparse_linear(const int32_t *index, const float *value, const int64_t *count, int64_t rows,
                            int64_t stride, const float *weight, const float *bias, int64_t out_f, int64_t in_f, float *out,
                            float *scratch, int scratch_threads) {
    int64_t blocks = (out_f + SPARSE_BLOCK - 1) / SPARSE_BLOCK;
#pragma omp parallel num_threads(sparse_threads(scratch_threads)) if (rows * in_f > 16384)
    {
        float *tile = scratch + (int64_t)thread_number() * in_f * SPARSE_BLOCK;
        int64_t b;
#pragma omp for schedule(static)
        for (b = 0; b < blocks; b++) {
            int64_t j0 = b * SPARSE_BLOCK, width = out_f - j0 < SPARSE_BLOCK ? out_f - j0 : SPARSE_BLOCK, r, jj;
            transpose_block(weight + j0 * in_f, in_f, tile, SPARSE_BLOCK, in_f, width);   /* tile[d][jj] = W[j0+jj][d] */
            for (r = 0; r < rows; r++) {
                float acc[SPARSE_BLOCK];
                for (jj = 0; jj < SPARSE_BLOCK; jj++) acc[jj] = jj < width ? bias[j0 + jj] : 0.0f;
                vec16 a0 = load16(acc), a1 = load16(acc + 16), a2 = load16(acc + 32), a3 = load16(acc + 48);
                const int32_t *ir = index + r * stride;
                const float *vr = value + r * stride;
                int64_t k;
                for (k = 0; k < count[r]; k++) {
                    const float v = vr[k], *t = tile + (int64_t)ir[k] * SPARSE_BLOCK;
                    a0 += v * load16(t); a1 += v * load16(t + 16); a2 += v * load16(t + 32); a3 += v * load16(t + 48);
                }
                store16(acc, a0); store16(acc + 16, a1); store16(acc + 32, a2); store16(acc + 48, a3);
                for (jj = 0; jj < width; jj++) out[r * out_f + j0 + jj] = acc[jj];
            }
        }
    }
}

/* grad_weight (out_f x in_f) = G^T x for G (rows x out_f) and x in aevb_sparse_rows' form; each
 * element summed over the rows in order. scratch as for aevb_sparse_linear. */
API void aevb_sparse_weight_gradient(const int32_t *index, const float *value, const int64_t *count, int64_t rows,
                                     int64_t stride, const float *grad, int64_t out_f, int64_t in_f, float *grad_weight,
                                     float *scratch, int scratch_threads) {
    int64_t blocks = (out_f + SPARSE_BLOCK - 1) / SPARSE_BLOCK;
#pragma omp parallel num_threads(sparse_threads(scratch_threads)) if (rows * in_f > 16384)
    {
        float *tile = scratch + (int64_t)thread_number() * in_f * SPARSE_BLOCK;
        int64_t b;
#pragma omp for schedule(static)
        for (b = 0; b < blocks; b++) {
            int64_t j0 = b * SPARSE_BLOCK, width = out_f - j0 < SPARSE_BLOCK ? out_f - j0 : SPARSE_BLOCK, r, jj;
            memset(tile, 0, (size_t)in_f * SPARSE_BLOCK * sizeof(float));
            for (r = 0; r < rows; r++) {
                float g[SPARSE_BLOCK];
                for (jj = 0; jj < SPARSE_BLOCK; jj++) g[jj] = jj < width ? grad[r * out_f + j0 + jj] : 0.0f;
                vec16 g0 = load16(g), g1 = load16(g + 16), g2 = load16(g + 32), g3 = load16(g + 48);
                const int32_t *ir = index + r * stride;
                const float *vr = value + r * stride;
                int64_t k;
                for (k = 0; k < count[r]; k++) {
                    const float v = vr[k];
                    float *t = tile + (int64_t)ir[k] * SPARSE_BLOCK;
                    store16(t, load16(t) + v * g0);
                    store16(t + 16, load16(t + 16) + v * g1);
                    store16(t + 32, load16(t + 32) + v * g2);
                    store16(t + 48, load16(t + 48) + v * g3);
                }
            }
            transpose_block(tile, SPARSE_BLOCK, grad_weight + j0 * in_f, in_f, width, in_f);   /* dW[j0+jj][d] = tile[d][jj] */
        }
    }
}

/* Threads an OpenMP region started from the calling thread would use (1 without OpenMP). */
API int aevb_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Subnormal floats flushed to zero (results) and read as zero (operands) on the calling thread:
 * x86's MXCSR FTZ and DAZ bits, AArch64's FPCR FZ; nothing where the CPU has no such mode here.
 * Why: aevb.denormals (which reads the mode back by arithmetic, on any build). */
static void set_thread_flush(int on) {
#if defined(__x86_64__) || defined(__i386__)
    const unsigned int bits = 0x8000u | 0x0040u; /* FTZ | DAZ */
    unsigned int csr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(on ? (csr | bits) : (csr & ~bits));
#elif defined(__aarch64__)
    const uint64_t bit = (uint64_t)1 << 24; /* FZ */
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(on ? (fpcr | bit) : (fpcr & ~bit)));
#else
    (void)on;
#endif
}

/* set_thread_flush(on) on the calling thread and on `threads` threads of its OpenMP team (torch's
 * own pool, which this library shares: aevb.native loads no build that would start a second one),
 * so that the matrix products, torch's parallel loops and these kernels all see one mode. */
API void aevb_set_flush_denormals(int on, int threads) {
    set_thread_flush(on);
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        set_thread_flush(on);
    }
#else
    (void)threads;
#endif
}
