/* Sustained fp32 FMA throughput of this CPU: every thread runs 12 independent chains of
 * 512-bit (or, without AVX-512, 256-bit) fused multiply-adds for about a second; prints
 * GFLOP/s summed over the threads. Built and run by benchmarks/bench_network.py. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define STORE _mm512_storeu_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define STORE _mm256_storeu_ps
#endif

int main(void) {
    const long n = 150000000L / LANES * 32;
    double start = omp_get_wtime();
    float sink = 0;
    int threads = 1;
#pragma omp parallel reduction(+ : sink)
    {
        threads = omp_get_num_threads();
        vec a[12];
        for (int i = 0; i < 12; i++) a[i] = SET1(0.01f * (i + 1));
        vec b = SET1(0.9999f), c = SET1(1e-5f);
        for (long it = 0; it < n; it++)
            for (int i = 0; i < 12; i++) a[i] = FMA(a[i], b, c);
        float out[LANES];
        for (int i = 0; i < 12; i++) {
            STORE(out, a[i]);
            for (int l = 0; l < LANES; l++) sink += out[l];
        }
    }
    double seconds = omp_get_wtime() - start;
    printf("%.1f %d %f\n", (double)n * 12 * LANES * 2 * threads / seconds / 1e9, threads, sink);
    return 0;
}
