/*
 * A process's wall clock moved (LD_PRELOAD; test/support/clock-skew.ts builds it): an edge box whose clock is wrong
 * (no RTC, no NTP), or is set while it runs. By LEAFMESH_TEST_CLOCK_SKEW_S seconds, or by the number of seconds in the
 * file LEAFMESH_TEST_CLOCK_SKEW_FILE, read again every 200 ms (a test writes it to set the clock). CLOCK_REALTIME,
 * gettimeofday and time only: monotonic clocks, which timers use, are left as they are, as they are on such a box.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);

static long offset(void) {
  static long fixed = 0, fromFile = 0;
  static int started = 0;
  static struct timespec nextLook = {0, 0};
  if (!started) {
    const char *s = getenv("LEAFMESH_TEST_CLOCK_SKEW_S");
    fixed = s ? atol(s) : 0;
    started = 1;
  }
  const char *file = getenv("LEAFMESH_TEST_CLOCK_SKEW_FILE");
  if (!file) return fixed;
  struct timespec now;
  real_clock_gettime(CLOCK_MONOTONIC, &now);
  if (now.tv_sec > nextLook.tv_sec || (now.tv_sec == nextLook.tv_sec && now.tv_nsec >= nextLook.tv_nsec)) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char text[32] = {0};
      if (pread(fd, text, sizeof text - 1, 0) > 0) fromFile = atol(text);
      close(fd);
    }
    nextLook = now;
    nextLook.tv_nsec += 200000000L;
    if (nextLook.tv_nsec >= 1000000000L) { nextLook.tv_sec++; nextLook.tv_nsec -= 1000000000L; }
  }
  return fixed + fromFile;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
  if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
  int r = real_clock_gettime(id, ts);
  if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset();
  return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
  static int (*real)(struct timeval *, void *);
  if (!real) real = dlsym(RTLD_NEXT, "gettimeofday");
  if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
  int r = real(tv, tz);
  if (r == 0 && tv) tv->tv_sec += offset();
  return r;
}

time_t time(time_t *t) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (t) *t = ts.tv_sec;
  return ts.tv_sec;
}
