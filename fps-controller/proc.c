/*
 * proc: fork/execve helpers (see proc.h). Signals are reset in the child because
 * the controller blocks them for its signalfd, and a blocked mask is inherited.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void child_reset_signals(void)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
}

pid_t proc_spawn(char *const argv[], int out_fd)
{
	return proc_spawn_listen(argv, out_fd, -1);
}

/* "LISTEN_PID=" plus the child's pid, written after fork without allocating (only
 * async-signal-safe work is allowed there: the admin server has threads). */
static void put_pid(char *buf, size_t len, pid_t pid)
{
	static const char pre[] = "LISTEN_PID=";
	char digits[24];
	size_t n = 0;
	unsigned long v = (unsigned long)pid;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < sizeof(digits));
	size_t o = sizeof(pre) - 1;
	memcpy(buf, pre, o);
	while (n > 0 && o + 1 < len)
		buf[o++] = digits[--n];
	buf[o] = '\0';
}

pid_t proc_spawn_listen(char *const argv[], int out_fd, int listen_fd)
{
	char **envp = environ;
	static char pidvar[48];
	static char fdsvar[] = "LISTEN_FDS=1";
	if (listen_fd >= 0) {
		size_t n = 0;
		while (environ[n])
			n++;
		envp = calloc(n + 3, sizeof(*envp));
		if (envp == NULL)
			return -1;
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (strncmp(environ[i], "LISTEN_", 7) != 0)
				envp[k++] = environ[i];
		envp[k++] = fdsvar;
		envp[k++] = pidvar;
		envp[k] = NULL;
	}
	pid_t pid = fork();
	if (pid != 0) {
		if (envp != environ)
			free(envp);
		return pid;
	}
	child_reset_signals();
	int devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		close(devnull);
	}
	if (out_fd >= 0) {
		dup2(out_fd, STDOUT_FILENO);
		dup2(out_fd, STDERR_FILENO);
	}
	if (listen_fd >= 0) {
		/* sd_listen_fds(3): the first passed socket is fd 3, kept across execve. */
		if (listen_fd == 3)
			fcntl(3, F_SETFD, 0);
		else if (dup2(listen_fd, 3) < 0)
			_exit(127);
		put_pid(pidvar, sizeof(pidvar), getpid());
	}
	execve(argv[0], argv, envp);
	_exit(127);
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int proc_run(char *const argv[], int timeout_ms, char **out, size_t cap)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		child_reset_signals();
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, STDIN_FILENO);
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		execve(argv[0], argv, environ);
		_exit(127);
	}
	close(fds[1]);
	char *buf = malloc(cap + 1);
	size_t len = 0;
	long long deadline = mono_ms() + timeout_ms;
	bool killed = false;
	for (;;) {
		long long left = deadline - mono_ms();
		if (left <= 0 && !killed) {
			kill(pid, SIGKILL);
			killed = true;
		}
		struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
		int pr = poll(&pfd, 1, killed ? 1000 : (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			if (killed)
				break;
			continue;
		}
		char tmp[4096];
		ssize_t n = read(fds[0], tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t take = buf && len < cap ? ((size_t)n < cap - len ? (size_t)n : cap - len) : 0;
		if (take)
			memcpy(buf + len, tmp, take);
		len += take;
	}
	close(fds[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			free(buf);
			return -1;
		}
	}
	if (buf)
		buf[len] = '\0';
	if (out)
		*out = buf;
	else
		free(buf);
	return status;
}

bool proc_running(pid_t pid)
{
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return false;
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *paren = strrchr(buf, ')');
	return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

/* Alive and not a zombie. A zombie that is our child is reaped here. */
static bool proc_alive(pid_t pid)
{
	int status;
	if (waitpid(pid, &status, WNOHANG) == pid)
		return false;
	return proc_running(pid);
}

pid_t proc_pidfile_owner(const char *pidfile, const char *needle)
{
	char buf[64];
	int fd = open(pidfile, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	long pid = strtol(buf, NULL, 10);
	if (pid <= 1 || pid == (long)getpid() || !proc_alive((pid_t)pid))
		return 0;
	/* /proc/PID/cmdline: NUL-separated arguments; a match on any of them. */
	char path[64], cmd[8192];
	snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	cmd[n] = '\0';
	for (ssize_t i = 0; i < n; i++)
		if (cmd[i] == '\0')
			cmd[i] = ' ';
	return strstr(cmd, needle) ? (pid_t)pid : 0;
}

static bool proc_wait_gone(pid_t pid, int ms)
{
	for (int waited = 0; waited < ms; waited += 20) {
		if (!proc_alive(pid))
			return true;
		struct timespec ts = {0, 20 * 1000000};
		nanosleep(&ts, NULL);
	}
	return !proc_alive(pid);
}

int proc_end(pid_t pid, int sig, int grace_ms)
{
	if (kill(pid, sig) < 0 && errno == ESRCH)
		return 0;
	if (proc_wait_gone(pid, grace_ms))
		return 0;
	kill(pid, SIGKILL);
	return proc_wait_gone(pid, 5000) ? 0 : -1;
}
