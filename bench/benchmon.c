/* benchmon — measurement helper for bench/smtp-in (not part of Postern).
 *
 * Compiled by bench/smtp-in into its temporary directory. Linux only.
 *
 *   benchmon cpu  TARGET                      print CPU time used so far, in microseconds
 *   benchmon mem  TARGET INTERVAL_MS [PSS_EVERY]  sample memory until SIGTERM/SIGINT, print
 *                                  "peak_pss_kb peak_rss_kb max_procs samples own_cpu_ms"
 *   benchmon wait DIR COUNT TIMEOUT_MS        poll until DIR holds >= COUNT entries, then print
 *                                             "count realtime_ns" (exit 1 on timeout)
 *
 * TARGET is either a cgroup directory (v1 cpuacct or v2) or "pid:N" for the process tree
 * rooted at N.
 *
 * CPU of a cgroup is the kernel's own accounting (cpuacct.usage, or usage_usec in cpu.stat):
 * it includes processes that have already exited. For a process tree it is the sum over the
 * live tree of utime+stime+cutime+cstime, which also covers exited children as long as their
 * parents reaped them (both Postfix's master and Postern's master do).
 *
 * Memory is the sum over the live processes of Pss (and Rss) from /proc/PID/smaps_rollup,
 * falling back to statm's resident size when smaps_rollup is unavailable.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 65536

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
	return (int)n;
}

/* Fields of /proc/PID/stat after the command name: state is field 3. */
static int read_stat(int pid, int *ppid, unsigned long long *ticks)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	long long cut, cst;
	int pp;

	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	if (read_file(path, buf, sizeof buf) <= 0)
		return -1;
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	/* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	 * cutime cstime */
	if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
		   &pp, &ut, &st, &cut, &cst) != 5)
		return -1;
	if (ppid != NULL)
		*ppid = pp;
	if (ticks != NULL)
		*ticks = ut + st + (unsigned long long)cut + (unsigned long long)cst;
	return 0;
}

/* All live processes of TARGET into pids[]; returns the count. */
static int list_pids(const char *target, int *pids, int cap)
{
	int n = 0;

	if (strncmp(target, "pid:", 4) == 0) {
		static int all[MAX_PIDS], parent[MAX_PIDS];
		int nall = 0, root = atoi(target + 4), changed, i, j;
		DIR *d = opendir("/proc");
		struct dirent *de;
		static char in[MAX_PIDS];

		if (d == NULL)
			return 0;
		while ((de = readdir(d)) != NULL && nall < MAX_PIDS) {
			int pid, pp;

			if (!isdigit((unsigned char)de->d_name[0]))
				continue;
			pid = atoi(de->d_name);
			if (read_stat(pid, &pp, NULL) == 0) {
				all[nall] = pid;
				parent[nall] = pp;
				nall++;
			}
		}
		closedir(d);
		memset(in, 0, (size_t)nall);
		for (i = 0; i < nall; i++)
			if (all[i] == root)
				in[i] = 1;
		do {
			changed = 0;
			for (i = 0; i < nall; i++) {
				if (in[i])
					continue;
				for (j = 0; j < nall; j++)
					if (in[j] && all[j] == parent[i]) {
						in[i] = 1;
						changed = 1;
						break;
					}
			}
		} while (changed);
		for (i = 0; i < nall && n < cap; i++)
			if (in[i])
				pids[n++] = all[i];
	} else {
		char path[4096];
		FILE *f;

		snprintf(path, sizeof path, "%s/cgroup.procs", target);
		f = fopen(path, "r");
		if (f == NULL)
			return 0;
		while (n < cap && fscanf(f, "%d", &pids[n]) == 1)
			n++;
		fclose(f);
	}
	return n;
}

static int cmd_cpu(const char *target)
{
	char path[4096], buf[4096];

	if (strncmp(target, "pid:", 4) == 0) {
		static int pids[MAX_PIDS];
		int n = list_pids(target, pids, MAX_PIDS), i;
		unsigned long long total = 0, t;
		long hz = sysconf(_SC_CLK_TCK);

		for (i = 0; i < n; i++)
			if (read_stat(pids[i], NULL, &t) == 0)
				total += t;
		printf("%llu\n", total * 1000000ULL / (unsigned long long)hz);
		return 0;
	}
	snprintf(path, sizeof path, "%s/cpuacct.usage", target);
	if (read_file(path, buf, sizeof buf) > 0) {
		printf("%llu\n", strtoull(buf, NULL, 10) / 1000ULL);
		return 0;
	}
	snprintf(path, sizeof path, "%s/cpu.stat", target);
	if (read_file(path, buf, sizeof buf) > 0) {
		char *p = strstr(buf, "usage_usec ");

		if (p != NULL) {
			printf("%llu\n", strtoull(p + 11, NULL, 10));
			return 0;
		}
	}
	fprintf(stderr, "benchmon: no CPU accounting in %s\n", target);
	return 1;
}

static void sample_process(int pid, int want_pss, unsigned long long *pss_kb,
			   unsigned long long *rss_kb)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
	if (want_pss && read_file(path, buf, sizeof buf) > 0) {
		unsigned long long pss = 0, rss = 0;

		p = strstr(buf, "\nRss:");
		if (p != NULL)
			rss = strtoull(p + 5, NULL, 10);
		p = strstr(buf, "\nPss:");
		if (p != NULL)
			pss = strtoull(p + 5, NULL, 10);
		*pss_kb += pss;
		*rss_kb += rss;
		return;
	}
	snprintf(path, sizeof path, "/proc/%d/statm", pid);
	if (read_file(path, buf, sizeof buf) > 0) {
		unsigned long long size, res;

		if (sscanf(buf, "%llu %llu", &size, &res) == 2) {
			unsigned long long kb = res * (unsigned long long)sysconf(_SC_PAGESIZE) / 1024;

			*pss_kb += kb;
			*rss_kb += kb;
		}
	}
}

/* RSS (statm, cheap) every interval; PSS (smaps_rollup walks every page table, which costs
 * about a millisecond of kernel time per process) every pss_every-th sample. */
static int cmd_mem(const char *target, long interval_ms, long pss_every)
{
	static int pids[MAX_PIDS];
	unsigned long long peak_pss = 0, peak_rss = 0, samples = 0;
	int max_procs = 0;
	struct sigaction sa;
	struct rusage ru;
	long long self_ms;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	while (!stop_requested) {
		unsigned long long pss = 0, rss = 0;
		int n = list_pids(target, pids, MAX_PIDS), i;
		int want_pss = pss_every <= 1 || samples % (unsigned long long)pss_every == 0;

		for (i = 0; i < n; i++)
			sample_process(pids[i], want_pss, &pss, &rss);
		if (want_pss && pss > peak_pss)
			peak_pss = pss;
		if (rss > peak_rss)
			peak_rss = rss;
		if (n > max_procs)
			max_procs = n;
		samples++;
		if (!stop_requested)
			sleep_ms(interval_ms);
	}
	getrusage(RUSAGE_SELF, &ru);
	self_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000LL +
		  (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
	printf("%llu %llu %d %llu %lld\n", peak_pss, peak_rss, max_procs, samples, self_ms);
	return 0;
}

static long count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	long n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int cmd_wait(const char *dir, long want, long timeout_ms)
{
	int64_t deadline = now_ns(CLOCK_MONOTONIC) + (int64_t)timeout_ms * 1000000LL;
	long n;

	for (;;) {
		n = count_entries(dir);
		if (n >= want) {
			printf("%ld %lld\n", n, (long long)now_ns(CLOCK_REALTIME));
			return 0;
		}
		if (now_ns(CLOCK_MONOTONIC) > deadline) {
			printf("%ld %lld\n", n, (long long)now_ns(CLOCK_REALTIME));
			return 1;
		}
		sleep_ms(5);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "cpu") == 0)
		return cmd_cpu(argv[2]);
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "mem") == 0)
		return cmd_mem(argv[2], atol(argv[3]), argc == 5 ? atol(argv[4]) : 1);
	if (argc == 5 && strcmp(argv[1], "wait") == 0)
		return cmd_wait(argv[2], atol(argv[3]), atol(argv[4]));
	fprintf(stderr, "usage: benchmon cpu TARGET | mem TARGET INTERVAL_MS [PSS_EVERY] | "
			"wait DIR COUNT TIMEOUT_MS\n");
	return 2;
}
