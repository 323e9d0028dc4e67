/* Cold-cache calibration for BENCHMARKS.md: a random walk over W KiB, back to back
 * or after sleeping GAP_US between walks; prints the mean time per walk.
 * Usage: gcc -O2 -o /tmp/cold scripts/cold-cache.c; /tmp/cold GAP_US MODE(0 alu, 1 mem) ITERS W_KIB */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <stdint.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static uint8_t buf[8<<20]; static size_t sz;
volatile uint64_t sink;
uint64_t alu(int n){uint64_t x=1;for(int i=0;i<n;i++){x=x*6364136223846793005ULL+1442695040888963407ULL;x^=x>>17;}return x;}
uint64_t mem(int n){uint64_t x=1,s=0;for(int i=0;i<n;i++){x=x*6364136223846793005ULL+1442695040888963407ULL;s+=buf[(x>>20)%sz];}return s;}
int main(int argc,char**argv){int gap=atoi(argv[1]);int which=atoi(argv[2]);int n=atoi(argv[3]); sz=atoi(argv[4])*1024;
 for(size_t i=0;i<sizeof buf;i++)buf[i]=i;
 double tot=0;int reps=200;
 for(int r=0;r<reps+10;r++){ if(gap){struct timespec s={0,gap*1000};nanosleep(&s,0);} double a=now(); sink+= which?mem(n):alu(n); double b=now(); if(r>=10) tot+=b-a;}
 printf("gap=%dus %s: %.1f us per run\n",gap,which?"mem":"alu",tot/reps);}
